//! Channel names: what a valid name is, and its namespace.

use super::encoding::{MAX_CHANNEL_LEN, NAMESPACE_SEPARATOR};
use super::error::ChannelError;

/// Checks a channel name: 1 to [`MAX_CHANNEL_LEN`] bytes of UTF-8, no
/// whitespace or control characters; if it has a `:`, the namespace before
/// the first `:` and the rest after it are both non-empty.
pub fn validate_channel(channel: &str) -> Result<(), ChannelError> {
    if channel.is_empty() {
        return Err(ChannelError::Empty);
    }
    if channel.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong(channel.len()));
    }
    if let Some(c) = channel
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ChannelError::ForbiddenChar(c));
    }
    if let Some((ns, name)) = channel.split_once(NAMESPACE_SEPARATOR) {
        if ns.is_empty() {
            return Err(ChannelError::EmptyNamespace);
        }
        if name.is_empty() {
            return Err(ChannelError::EmptyName);
        }
    }
    Ok(())
}

/// The namespace of a channel: the part before the first `:` (`chat` for
/// `chat:room1`), or `None` for a channel without one, which takes the
/// default options.
pub fn namespace(channel: &str) -> Option<&str> {
    channel
        .split_once(NAMESPACE_SEPARATOR)
        .map(|(namespace, _)| namespace)
}
