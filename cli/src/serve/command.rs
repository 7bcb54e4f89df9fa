//! The daemon's callback handler: runs a command per received callback.
//!
//! The payload goes to the command's stdin; the channel, key, attempt, `webhook-id` and
//! content type go in `HOOKSPOOL_*` environment variables. Exit status 0 handles the
//! callback; [`EXIT_PERMANENT`] (65, `EX_DATAERR`) sends it to `dead` at once; anything else
//! (or a signal, or no exit within the handler timeout) is a retryable failure whose message
//! carries the end of the command's stderr.

use std::process::Stdio;

use hookspool_webhooks::{Handler, HandlerError, Inbound};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The exit status by which a handler command says "never retry this" (`EX_DATAERR`).
pub const EXIT_PERMANENT: i32 = 65;

/// How much of the command's stderr is kept in the error message.
const STDERR_TAIL: usize = 512;

/// Runs `program args…` for each callback of a channel.
#[derive(Clone, Debug)]
pub struct CommandHandler {
    program: String,
    args: Vec<String>,
}

impl CommandHandler {
    /// A handler running `argv[0]` with the rest as arguments; `None` for an empty `argv`.
    pub fn new(argv: &[String]) -> Option<Self> {
        let (program, rest) = argv.split_first()?;
        Some(CommandHandler {
            program: program.clone(),
            args: rest.to_vec(),
        })
    }

    async fn run(&self, msg: Inbound) -> Result<(), HandlerError> {
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .env("HOOKSPOOL_CHANNEL", msg.channel.as_str())
            .env("HOOKSPOOL_KEY", msg.key.to_string())
            .env("HOOKSPOOL_ATTEMPT", msg.attempt.to_string())
            .env(
                "HOOKSPOOL_WEBHOOK_ID",
                msg.webhook_id.as_deref().unwrap_or(""),
            )
            .env(
                "HOOKSPOOL_CONTENT_TYPE",
                msg.content_type.as_deref().unwrap_or(""),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // The callback loop's timeout drops this future: the command must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HandlerError::retry(format!("cannot run {:?}: {e}", self.program)))?;
        let mut stdin = child.stdin.take();
        let mut stderr = child.stderr.take();
        let payload = msg.payload;
        // Feed stdin and drain stderr at the same time, so neither pipe can fill up and stall
        // the command. A command that does not read its stdin is not an error.
        let feed = async {
            if let Some(mut s) = stdin.take() {
                let _ = s.write_all(&payload).await;
            }
        };
        let drain = async {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut buf).await;
            }
            buf
        };
        let ((), err) = tokio::join!(feed, drain);
        let status = child
            .wait()
            .await
            .map_err(|e| HandlerError::retry(format!("waiting for {:?}: {e}", self.program)))?;
        if status.success() {
            return Ok(());
        }
        let tail = String::from_utf8_lossy(&err[err.len().saturating_sub(STDERR_TAIL)..]);
        let message = format!("{:?} exited with {status}: {}", self.program, tail.trim());
        if status.code() == Some(EXIT_PERMANENT) {
            Err(HandlerError::permanent(message))
        } else {
            Err(HandlerError::retry(message))
        }
    }
}

impl Handler for CommandHandler {
    fn handle(&self, msg: Inbound) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.run(msg)
    }
}
