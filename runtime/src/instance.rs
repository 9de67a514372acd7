//! Instance ids: a short id of this process, unique in practice, that
//! starts every client id (`INSTANCE-SHARD-N`). Client ids are therefore
//! never reused across restarts or servers, and in a cluster the API knows
//! from a client id which server holds it (the Redis backbone names each
//! server's control topic after its instance id).

/// Largest instance id [`instance_of`] accepts (ours have 6 characters).
const MAX_INSTANCE_LEN: usize = 16;

/// This process's instance id, from its start seed: six lowercase hex
/// digits.
pub fn from_seed(seed: u64) -> String {
    format!("{:06x}", seed & 0xff_ffff)
}

/// The prefix of the client ids that shard `shard` of instance `instance`
/// gives out (the node appends a counter).
pub fn client_prefix(instance: &str, shard: usize) -> String {
    format!("{instance}-{shard}-")
}

/// True if `s` looks like an instance id (lowercase hex digits, as
/// [`from_seed`] makes them). The Redis backbone names a server's control
/// topic after it, so it must never hold anything else.
pub fn is_instance(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_INSTANCE_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The instance id a client id starts with (client ids are
/// `INSTANCE-SHARD-N`), or `None` if `client` is not one of ours.
pub fn instance_of(client: &str) -> Option<&str> {
    let (instance, rest) = client.split_once('-')?;
    (is_instance(instance) && !rest.is_empty()).then_some(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_name_their_instance() {
        assert_eq!(instance_of("0a1b2c-1-17"), Some("0a1b2c"));
        for garbled in [
            "",
            "-",
            "0a1b2c",
            "0a1b2c-",
            "no-such-client",
            "-1-2",
            "A1B2C3-0-1",
        ] {
            assert_eq!(instance_of(garbled), None, "{garbled:?}");
        }
        assert!(!is_instance("0123456789abcdef0"), "too long");
        assert!(!is_instance("ab:cd"));
    }

    #[test]
    fn our_ids_are_instances_and_prefix_client_ids() {
        let id = from_seed(0x1234_5678_9abc);
        assert_eq!(id, "789abc");
        assert!(is_instance(&id));
        let client = format!("{}7", client_prefix(&id, 2));
        assert_eq!(client, "789abc-2-7");
        assert_eq!(instance_of(&client), Some(id.as_str()));
    }
}
