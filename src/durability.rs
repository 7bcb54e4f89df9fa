//! `Durability`: when a durable backend's mutating call returns. One named setting, shared by
//! every durable backend, so that "durable" is never an accident of defaults.

use std::time::Duration;

/// When a durable backend's mutating call returns `Ok`.
///
/// Every durable backend takes this setting when it opens and documents what each value
/// means for its files (see its crate docs). A non-durable backend (memory) has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once the call's write is synced to the device (`fdatasync`); concurrent callers share
    /// one sync (group commit). Survives a process crash and a power loss. The default.
    #[default]
    Immediate,
    /// Once the call's write is in the operating system (it survives `kill -9`); a
    /// background sync runs every `interval`, and [`crate::Backend::sync`] forces one. A
    /// power loss can lose the last `interval`.
    Periodic {
        /// How often written data is synced. Must be more than zero.
        interval: Duration,
    },
}
