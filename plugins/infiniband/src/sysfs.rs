//! Checks for the text formats in which the Linux RDMA core and its drivers
//! print `/sys/class/infiniband` attributes.

/// Maximum length of a free-text attribute such as `fw_ver` or `board_id`.
/// mlx5 prints `board_id` from a 64-byte field. A longer value is treated as
/// malformed.
const TEXT_MAX_CHARS: usize = 64;

/// Maximum length of an RDMA device name that is used in attribute keys. A
/// key name has at most 63 characters, and the longest suffix this collector
/// appends is `.port<N>.phys_state` (at most 21 characters for a 16-bit
/// port number).
pub const DEVICE_NAME_MAX_CHARS: usize = 40;

/// Returns whether `text` is a single line of printable ASCII of at most
/// [`TEXT_MAX_CHARS`], as `fw_ver`, `hca_type`, `board_id` and `link_layer` are.
pub fn is_plain_text(text: &str) -> bool {
    !text.is_empty() && text.len() <= TEXT_MAX_CHARS && text.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ')
}

/// Returns whether `name` can be used in attribute keys. It must consist of
/// the characters a key name allows (`[A-Za-z0-9._-]`) and leave room for
/// the longest suffix.
pub fn is_key_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DEVICE_NAME_MAX_CHARS
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// Parses a numbered state such as `4: ACTIVE` (`state`), `5: LinkUp`
/// (`phys_state`) or `1: CA` (`node_type`) into its number and name.
pub fn parse_numbered(text: &str) -> Option<(u32, &str)> {
    let (number, name) = text.split_once(": ")?;
    let number = number.parse().ok()?;
    is_plain_text(name).then_some((number, name))
}

/// Returns whether `text` is a GUID as the RDMA core prints `node_guid` and
/// `sys_image_guid`: four groups of four lowercase hex digits, such as
/// `b83f:d203:001c:7a40`.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split(':').collect();
    groups.len() == 4
        && groups.iter().all(|group| {
            group.len() == 4 && group.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        })
}

/// Parses a port `rate` such as `200 Gb/sec (4X HDR)` or `2.5 Gb/sec (1X)`
/// into its speed in tenths of Gb/s, which orders rates numerically. The
/// kernel prints the speed as whole Gb/s with an optional `.5`, then the
/// link width and the lane speed, which older kernels leave out for SDR.
pub fn parse_rate(text: &str) -> Option<u32> {
    let (speed, rest) = text.split_once(" Gb/sec (")?;
    let (whole, half) = match speed.split_once('.') {
        Some((whole, "5")) => (whole, 5),
        Some(_) => return None,
        None => (speed, 0),
    };
    let whole: u32 = whole.parse().ok()?;

    let lanes = rest.strip_suffix(')')?;
    let (width, lane_speed) = lanes.split_once('X')?;
    width.parse::<u32>().ok()?;
    let lane_speed_valid = match lane_speed.strip_prefix(' ') {
        Some(name) => is_plain_text(name),
        None => lane_speed.is_empty(),
    };
    if !lane_speed_valid {
        return None;
    }
    whole.checked_mul(10)?.checked_add(half)
}

/// Returns whether `name` is a PCI address in `domain:bus:device.function`
/// form, such as `0000:98:00.0`. RDMA devices of other buses (platform
/// devices on some Arm SoCs) have a `device` link with another name.
pub fn is_pci_address(name: &str) -> bool {
    let hex = |part: &str, len: usize| part.len() == len && part.bytes().all(|byte| byte.is_ascii_hexdigit());
    let parts: Vec<&str> = name.split(':').collect();
    let [domain, bus, slot] = parts.as_slice() else {
        return false;
    };
    let Some((device, function)) = slot.split_once('.') else {
        return false;
    };
    hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && function.len() == 1
        && matches!(function.as_bytes()[0], b'0'..=b'7')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_states() {
        assert_eq!(parse_numbered("4: ACTIVE"), Some((4, "ACTIVE")));
        assert_eq!(parse_numbered("7: Phy Test"), Some((7, "Phy Test")));
        assert_eq!(parse_numbered("1: CA"), Some((1, "CA")));
        assert_eq!(parse_numbered("ACTIVE"), None);
        assert_eq!(parse_numbered("x: ACTIVE"), None);
        assert_eq!(parse_numbered("4: "), None);
    }

    #[test]
    fn guid_format() {
        assert!(is_guid("b83f:d203:001c:7a40"));
        assert!(!is_guid("B83F:D203:001C:7A40"));
        assert!(!is_guid("b83fd203001c7a40"));
        assert!(!is_guid("b83f:d203:001c:7a4"));
        assert!(!is_guid("b83f:d203:001c:7a40:0000"));
    }

    #[test]
    fn rates_in_tenths() {
        assert_eq!(parse_rate("200 Gb/sec (4X HDR)"), Some(2000));
        assert_eq!(parse_rate("100 Gb/sec (4X EDR)"), Some(1000));
        assert_eq!(parse_rate("2.5 Gb/sec (1X SDR)"), Some(25));
        assert_eq!(parse_rate("2.5 Gb/sec (1X)"), Some(25));
        assert_eq!(parse_rate("56 Gb/sec (4X FDR)"), Some(560));
        assert_eq!(parse_rate("fast"), None);
        assert_eq!(parse_rate("100 Gb/sec"), None);
        assert_eq!(parse_rate("100.25 Gb/sec (4X EDR)"), None);
        assert_eq!(parse_rate("100 Gb/sec (fourX EDR)"), None);
        assert_eq!(parse_rate("100 Gb/sec (4XEDR)"), None);
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:98:00.0"));
        assert!(is_pci_address("0002:01:00.1"));
        assert!(!is_pci_address("HISI0001:00"));
        assert!(!is_pci_address("0000:98:00.8"));
        assert!(!is_pci_address("98:00.0"));
    }

    #[test]
    fn key_safe_device_names() {
        assert!(is_key_safe_name("mlx5_0"));
        assert!(is_key_safe_name("rocep152s0f0"));
        assert!(!is_key_safe_name("mlx5 0"));
        assert!(!is_key_safe_name(""));
        assert!(!is_key_safe_name(&"a".repeat(DEVICE_NAME_MAX_CHARS + 1)));
    }
}
