//! The command line: every command, flag and help text, as clap derive types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;

const EXAMPLES: &str = "\
Examples:
  hookspool --data-dir ./data queue create orders --ttl 1d
  echo '{\"id\":1}' | hookspool --data-dir ./data push orders
  hookspool --data-dir ./data fetch orders --json
  hookspool --url http://127.0.0.1:8080 --token \"$TOKEN\" count orders

Run `hookspool --help` for exit codes, --url and naming rules.";

const LONG_HELP: &str = "\
Examples:
  hookspool --data-dir ./data queue create orders --ttl 1d
  echo '{\"id\":1}' | hookspool --data-dir ./data push orders
  hookspool --data-dir ./data fetch orders --json
  hookspool --url http://127.0.0.1:8080 --token \"$TOKEN\" count orders

Against a running daemon:
  With --url (or HOOKSPOOL_URL), every queue command (queues, queue create|show|update|delete,
  count, fetch, dump, reset, push, delete, set-phase, replay) runs through the daemon's HTTP
  API instead of opening a data directory, so it works while `hookspool serve` has the
  directory open. Output and exit codes are the same as offline. The URL may carry the
  prefix the API is mounted under (http://host/hookspool/). The token is --token or
  HOOKSPOOL_TOKEN (prefer the variable: arguments are visible to other local users).
  --url cannot be combined with `serve`.

Exit codes:
  0  success
  1  the operation failed (unknown queue or item, invalid queue id or phase, phase conflict,
     confirmation refused, token refused by the daemon, I/O error); the message on stderr
     says why
  2  usage error (unknown command or flag, missing argument, bad number or duration)
  3  the data directory is in use by another hookspool process (use --url to go through
     the daemon that holds it)
  4  the daemon given by --url, or the database given by --database-url, does not answer
     (connection refused, unknown host, timeout)

Durations are written like 500ms, 30s, 15m, 2h, 1d or 1h30m.
Queue ids: 1-128 characters from A-Z a-z 0-9 _ - . starting with a letter or digit.
Phases: pending, in_flight, done, dead, expired, or a name of your own (1-64 characters from
a-z 0-9 _ - . starting with a lowercase letter).";

/// The hookspool tool: inspect and change the queues of a data directory, or of a running
/// daemon (`--url`); run the daemon (`serve`).
#[derive(Debug, Parser)]
#[command(
    name = "hookspool",
    version,
    about = "Inspect and manage the queues of a hookspool data directory or daemon",
    long_about = "Inspect and manage the queues of a hookspool data directory (offline: the \
                  directory must not be open in another process), or of a running daemon \
                  with --url.\n\n\
                  Tables are for people; pass --json for output that scripts can parse.",
    after_help = EXAMPLES,
    after_long_help = LONG_HELP,
)]
pub struct Cli {
    /// The data directory (created by `serve` and `queue create`; other commands refuse a missing
    /// one).
    #[arg(
        long,
        global = true,
        env = "HOOKSPOOL_DATA_DIR",
        default_value = "./hookspool-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// Run the queue commands against the hookspool daemon at this URL (its HTTP API, with
    /// the prefix it is mounted under, if any) instead of opening --data-dir. Not with
    /// `serve`.
    #[arg(long, global = true, env = "HOOKSPOOL_URL", value_name = "URL")]
    pub url: Option<String>,

    /// Work on the queues kept in this PostgreSQL database instead of --data-dir (a URL such
    /// as postgresql://user:password@host/db, or libpq `key=value` pairs). Any number of
    /// processes may use it at once: nothing is locked. With `serve`, the daemon keeps its
    /// queues there (the same as `--backend postgres`).
    #[arg(
        long,
        global = true,
        env = "HOOKSPOOL_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// The PostgreSQL schema that holds hookspool's tables and functions [default: hookspool].
    #[arg(
        long,
        global = true,
        env = "HOOKSPOOL_DATABASE_SCHEMA",
        value_name = "NAME"
    )]
    pub database_schema: Option<String>,

    /// The API token to send with --url [env: HOOKSPOOL_TOKEN]. (For `serve`, see `hookspool
    /// serve --help`.)
    // The id is that of `serve --token`, so clap does not also add this global flag to
    // `serve` (two `--token` flags there would clash); given before `serve`, it is a token
    // the daemon accepts. HOOKSPOOL_TOKEN is read by the binary, not by clap, so that the
    // variable never becomes a daemon token by that route.
    #[arg(id = "tokens", long = "token", global = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Print JSON (one object per line for item lists) instead of tables. Times are
    /// milliseconds since the Unix epoch.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the HTTP API and the webhook delivery loop.
    #[command(
        long_about = "Run hookspool as a service on the data directory: the HTTP API (queue \
                      admin, REST Hooks subscriptions, publishing, delivery log, inbound \
                      callbacks, health, OpenAPI document at /openapi.json), the webhook \
                      delivery loop, and the handlers of callback channels. Settings come from \
                      a TOML file (--config), environment variables and flags, in rising \
                      priority; callback channels ([channels.NAME]: secret, command) and other \
                      hookspools to subscribe to ([[sources]]: url, token, event, channel, \
                      callback_url, owner) exist only in the file. Listening on anything but \
                      loopback needs an API token. SIGTERM \
                      or Ctrl-C stops it gracefully: no new requests, deliveries in flight \
                      finish (up to the grace period) or go back to pending, the store is \
                      synced, exit code 0.",
        after_help = "Example:\n  hookspool serve\n  \
                      HOOKSPOOL_TOKENS=$(openssl rand -hex 24) hookspool serve --listen 0.0.0.0:8080\n  \
                      hookspool --data-dir /var/lib/hookspool serve --config /etc/hookspool.toml"
    )]
    Serve(Box<crate::serve::ServeArgs>),

    /// List every queue with its item count and settings.
    #[command(
        long_about = "List every queue: id, number of items, creation time (UTC), item TTL and \
                      retention.",
        after_help = "Example:\n  hookspool queues\n  hookspool queues --json | jq '.[].id'"
    )]
    Queues,

    /// Create, show, update or delete a queue.
    #[command(subcommand)]
    Queue(QueueCommand),

    /// Count a queue's items, in every phase or in one.
    #[command(
        long_about = "Print how many items a queue holds (from counters: instant even on \
                      large queues), in every phase or only in --phase.",
        after_help = "Example:\n  hookspool count orders\n  hookspool count orders --phase dead"
    )]
    Count {
        /// The queue.
        queue: String,
        /// Count only this phase.
        #[arg(long)]
        phase: Option<String>,
    },

    /// Show items without removing them.
    #[command(
        long_about = "Show a page of a queue's items, oldest first, without changing them: \
                      key, phase, attempts, creation time, not-before time (`-` when due) and \
                      a payload preview. With --json, one JSON object per line with every \
                      field and the whole payload (as JSON if it is JSON, as a string if it is \
                      other text, as payload_base64 otherwise).",
        after_help = "Example:\n  hookspool fetch orders --phase dead --limit 5\n  \
                      hookspool fetch orders --reverse --limit 1 --json\n  \
                      hookspool fetch orders --key 42"
    )]
    Fetch(FetchArgs),

    /// Write every item of a queue as JSON lines.
    #[command(
        long_about = "Write every item of a queue to stdout, oldest first, one JSON object per \
                      line (the format of `fetch --json`). Items are read a page at a time, so \
                      a queue of any size dumps in constant memory; when stderr is a terminal, \
                      progress is shown there.",
        after_help = "Example:\n  hookspool dump orders > orders.jsonl"
    )]
    Dump {
        /// The queue.
        queue: String,
    },

    /// Check every item's stored data; exit 1 if any is damaged.
    #[command(
        long_about = "Check the stored data of every item of every queue against its \
                      checksums, and report damage by queue and key. Changes nothing unless \
                      --quarantine is given: then each damaged item moves to the phase \
                      `corrupt`, with what is wrong as its error (delete it there, or restore \
                      it from a backup). Exit 0 when nothing is damaged, 1 when something is. \
                      On a data directory a daemon is using, it is refused (exit 3): use \
                      --url to have the daemon check it.",
        after_help = "Example:\n  hookspool verify\n  hookspool verify --quarantine\n  \
                      hookspool --url http://127.0.0.1:8080 verify"
    )]
    Verify {
        /// Move each damaged item to the phase `corrupt`.
        #[arg(long)]
        quarantine: bool,
    },

    /// Remove every item of a queue (asks first).
    #[command(
        long_about = "Remove every item of a queue; the queue and its settings stay. Asks for \
                      confirmation on the terminal unless --yes is given; when stdin is not a \
                      terminal and --yes is missing, it refuses and removes nothing.",
        after_help = "Example:\n  hookspool reset orders\n  hookspool reset orders --yes"
    )]
    Reset {
        /// The queue.
        queue: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },

    /// Push one item; prints its key.
    #[command(
        long_about = "Push one item into a queue and print the key it was given. The payload \
                      is --data, or else all of stdin (any bytes; at most 1 MiB).",
        after_help = "Example:\n  hookspool push orders --data '{\"id\":1}' --meta event=order.paid\n  \
                      hookspool push orders --delay 30s < payload.json"
    )]
    Push {
        /// The queue.
        queue: String,
        /// The payload (default: read stdin to its end).
        #[arg(long)]
        data: Option<String>,
        /// Metadata entry KEY=VALUE (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
        meta: Vec<(String, String)>,
        /// Do not hand the item out before this much time has passed.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        delay: Option<Duration>,
    },

    /// Delete one item.
    #[command(
        long_about = "Delete one item by key, whatever its phase. Fails if there is no such item.",
        after_help = "Example:\n  hookspool delete orders 42"
    )]
    Delete {
        /// The queue.
        queue: String,
        /// The item's key.
        key: u64,
    },

    /// Move one item to a phase (optionally only if it is in another given phase).
    #[command(
        long_about = "Move one item to PHASE (any phase but in_flight, which only consumers \
                      enter by claiming). With --if-phase, the move happens only if the item \
                      is currently in that phase (compare-and-set); otherwise it fails and \
                      nothing changes. Moving to pending makes the item due now.",
        after_help = "Example:\n  hookspool set-phase orders 42 needs-review\n  \
                      hookspool set-phase orders 42 pending --if-phase dead"
    )]
    SetPhase {
        /// The queue.
        queue: String,
        /// The item's key.
        key: u64,
        /// The phase to move it to.
        phase: String,
        /// Only move it if it is in this phase now.
        #[arg(long, value_name = "PHASE")]
        if_phase: Option<String>,
    },

    /// Move dead items back to pending.
    #[command(
        long_about = "Move a dead item (KEY), or every dead item (--all), back to pending, due \
                      now. Replaying a single item that is not dead fails and changes nothing.",
        after_help = "Example:\n  hookspool replay orders 42\n  hookspool replay orders --all"
    )]
    Replay {
        /// The queue.
        queue: String,
        /// The dead item's key.
        #[arg(required_unless_present = "all")]
        key: Option<u64>,
        /// Replay every dead item.
        #[arg(long, conflicts_with = "key")]
        all: bool,
    },
}

/// What `fetch` selects.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The queue.
    pub queue: String,
    /// Only items in this phase.
    #[arg(long)]
    pub phase: Option<String>,
    /// Skip this many matching items first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// At most this many items.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
    /// Only the item with this key (whatever its phase).
    #[arg(long, conflicts_with_all = ["phase", "offset", "reverse"])]
    pub key: Option<u64>,
}

/// The queue commands.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue.
    #[command(
        long_about = "Create a queue (and the data directory, if it does not exist yet).\n\n\
                      --ttl: pending items older than this are never handed out; they move to \
                      phase `expired`. --retention: what acknowledging an item does: keep it \
                      in phase `done` (default) or remove it. --secret: the signing secret \
                      (note that command-line arguments are visible to other local users).",
        after_help = "Example:\n  hookspool queue create orders --ttl 1d --retention remove \
                      --meta team=billing"
    )]
    Create {
        /// The queue id.
        id: String,
        /// The settings to give it.
        #[command(flatten)]
        settings: QueueSettings,
    },

    /// Show a queue's settings and its item counts by phase.
    #[command(
        long_about = "Show a queue's settings (the secret masked) and how many items it has \
                      in each phase.",
        after_help = "Example:\n  hookspool queue show orders"
    )]
    Show {
        /// The queue id.
        id: String,
    },

    /// Change a queue's settings (items are kept).
    #[command(
        long_about = "Change some of a queue's settings; the others, and every item, are kept.",
        after_help = "Example:\n  hookspool queue update orders --ttl 2h --meta owner=ops\n  \
                      hookspool queue update orders --no-ttl --no-secret"
    )]
    Update {
        /// The queue id.
        id: String,
        /// The settings to give it.
        #[command(flatten)]
        settings: QueueSettings,
        /// Remove the TTL.
        #[arg(long, conflicts_with = "ttl")]
        no_ttl: bool,
        /// Remove the signing secret.
        #[arg(long, conflicts_with = "secret")]
        no_secret: bool,
        /// Remove this metadata key (repeatable).
        #[arg(long, value_name = "KEY")]
        remove_meta: Vec<String>,
    },

    /// Delete a queue and all its items (asks first).
    #[command(
        long_about = "Delete a queue and every item in it. Asks for confirmation on the \
                      terminal unless --yes is given; when stdin is not a terminal and --yes \
                      is missing, it refuses and deletes nothing.",
        after_help = "Example:\n  hookspool queue delete orders --yes"
    )]
    Delete {
        /// The queue id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// Settings shared by `queue create` and `queue update`.
#[derive(Debug, Args)]
pub struct QueueSettings {
    /// Item TTL, e.g. 15m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// The signing secret callbacks into the queue must be signed with (a `whsec_` secret).
    #[arg(long)]
    pub secret: Option<String>,
    /// What acknowledging an item does.
    #[arg(long, value_enum)]
    pub retention: Option<RetentionArg>,
    /// How long an item stays in `done` before the daemon's retention pass removes it: a
    /// duration of at least 1s (e.g. 3d), or `forever` (the default).
    #[arg(long, value_name = "PERIOD", value_parser = parse_period, allow_hyphen_values = true)]
    pub retain_done: Option<RetainPeriod>,
    /// How long an item stays in `dead` (a duration, or `forever`).
    #[arg(long, value_name = "PERIOD", value_parser = parse_period, allow_hyphen_values = true)]
    pub retain_dead: Option<RetainPeriod>,
    /// How long an item stays in `expired` (a duration, or `forever`).
    #[arg(long, value_name = "PERIOD", value_parser = parse_period, allow_hyphen_values = true)]
    pub retain_expired: Option<RetainPeriod>,
    /// Metadata entry KEY=VALUE (repeatable; not `secret`, which holds --secret).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
}

impl QueueSettings {
    /// `retain` with the periods these flags give replaced.
    pub fn retain_over(&self, mut retain: hookspool::Retain) -> hookspool::Retain {
        for (flag, slot) in [
            (self.retain_done, &mut retain.done),
            (self.retain_dead, &mut retain.dead),
            (self.retain_expired, &mut retain.expired),
        ] {
            if let Some(RetainPeriod(period)) = flag {
                *slot = period;
            }
        }
        retain
    }

    /// Whether any retention flag was given.
    pub fn sets_retain(&self) -> bool {
        self.retain_done.is_some() || self.retain_dead.is_some() || self.retain_expired.is_some()
    }
}

/// A retention period given on the command line: `None` is `forever`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetainPeriod(pub Option<Duration>);

fn parse_period(text: &str) -> Result<RetainPeriod, String> {
    crate::duration::parse_retain_period(text).map(RetainPeriod)
}

/// `--retention` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RetentionArg {
    /// Keep acknowledged items in phase `done`.
    Keep,
    /// Remove acknowledged items.
    Remove,
}

impl From<RetentionArg> for hookspool::Retention {
    fn from(r: RetentionArg) -> Self {
        match r {
            RetentionArg::Keep => hookspool::Retention::Keep,
            RetentionArg::Remove => hookspool::Retention::Remove,
        }
    }
}

/// Parses `KEY=VALUE` (the value may contain `=`; the key may not be empty).
fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn meta_parsing() {
        assert_eq!(parse_meta("a=b"), Ok(("a".into(), "b".into())));
        assert_eq!(parse_meta("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_meta("a="), Ok(("a".into(), String::new())));
        assert!(parse_meta("=b").is_err());
        assert!(parse_meta("ab").is_err());
    }

    #[test]
    fn parses_global_flags_after_the_command() {
        let cli = Cli::try_parse_from([
            "hookspool",
            "fetch",
            "q",
            "--limit",
            "5",
            "--json",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.data_dir, PathBuf::from("/d"));
        let Command::Fetch(f) = cli.command else {
            panic!("not fetch")
        };
        assert_eq!((f.limit, f.offset, f.reverse), (5, 0, false));
    }

    #[test]
    fn usage_errors_are_rejected_by_clap() {
        for args in [
            &["hookspool", "push", "q", "--delay", "30"][..],
            &["hookspool", "delete", "q", "not-a-key"],
            &["hookspool", "delete", "q", "-1"],
            &["hookspool", "replay", "q"],
            &["hookspool", "replay", "q", "1", "--all"],
            &["hookspool", "fetch", "q", "--key", "1", "--phase", "dead"],
            &[
                "hookspool",
                "queue",
                "create",
                "q",
                "--retention",
                "sometimes",
            ],
            &["hookspool", "queue", "create", "q", "--meta", "novalue"],
        ] {
            let err = Cli::try_parse_from(args).expect_err(&format!("{args:?}"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
