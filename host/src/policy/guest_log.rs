//! The `scour:policy/log` import: messages a policy emits while it runs,
//! kept per call within bounds and written to the host's log afterwards.

use super::Call;
use super::loaded::wit::scour::policy::log::{Host, Level};

/// Messages kept per call; later ones are counted and dropped.
const MAX_MESSAGES: usize = 100;
/// Longer messages are cut.
const MAX_MESSAGE_BYTES: usize = 1024;

/// One call's messages.
#[derive(Debug, Default)]
pub(crate) struct GuestLog {
    messages: Vec<(Level, String)>,
    dropped: u64,
}

impl GuestLog {
    /// Writes the messages to the host's log as the policy's own, under the
    /// `scour::policy::guest` target.
    pub(crate) fn forward(&self, policy: &str, call: Call) {
        if self.messages.is_empty() && self.dropped == 0 {
            return;
        }
        let call = call.to_string();
        for (level, message) in &self.messages {
            match level {
                Level::Debug => tracing::debug!(target: "scour::policy::guest", %policy, %call, "{message}"),
                Level::Info => tracing::info!(target: "scour::policy::guest", %policy, %call, "{message}"),
                Level::Warn => tracing::warn!(target: "scour::policy::guest", %policy, %call, "{message}"),
            }
        }
        if self.dropped > 0 {
            tracing::warn!(
                target: "scour::policy::guest",
                %policy,
                %call,
                dropped = self.dropped,
                "the policy logged more than {MAX_MESSAGES} messages in one call; the rest were dropped"
            );
        }
    }
}

impl Host for GuestLog {
    fn emit(&mut self, level: Level, message: String) {
        if self.messages.len() >= MAX_MESSAGES {
            self.dropped += 1;
            return;
        }
        self.messages
            .push((level, crate::text::loggable(message, MAX_MESSAGE_BYTES)));
    }
}
