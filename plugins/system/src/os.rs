//! OS identity from os-release and kernel identity from `/proc/sys/kernel`.

use std::collections::BTreeMap;

use hw_collector_guest::{OsInfo, Root};

/// Reads the OS and kernel description. The host grants `/etc/os-release`
/// when the machine has one; `/usr/lib/os-release` is the fallback that
/// os-release(5) defines.
pub fn collect_os(root: &Root) -> OsInfo {
    let release = root
        .read_opt("/etc/os-release")
        .or_else(|| root.read_opt("/usr/lib/os-release"))
        .map(|text| parse_os_release(&text))
        .unwrap_or_default();
    let get = |key: &str| release.get(key).cloned().filter(|value| !value.is_empty());

    OsInfo {
        hostname: root.read_opt("/proc/sys/kernel/hostname"),
        kernel: root.read_opt("/proc/sys/kernel/osrelease"),
        kernel_version: root.read_opt("/proc/sys/kernel/version"),
        architecture: root.read_opt("/proc/sys/kernel/arch"),
        name: get("NAME"),
        id: get("ID"),
        version_id: get("VERSION_ID"),
        pretty_name: get("PRETTY_NAME"),
    }
}

/// Parses os-release(5): `KEY=value` lines whose value may be single- or
/// double-quoted with backslash escapes. Comments and malformed lines are
/// skipped.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        fields.insert(key.trim().to_owned(), unquote(raw.trim()));
    }
    fields
}

fn unquote(raw: &str) -> String {
    let quote = match raw.chars().next() {
        Some(quote @ ('"' | '\'')) if raw.len() >= 2 && raw.ends_with(quote) => quote,
        _ => return raw.to_owned(),
    };
    let inner = &raw[1..raw.len() - 1];
    if quote == '\'' {
        return inner.to_owned();
    }
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                value.push(escaped);
            }
        } else {
            value.push(c);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quotes_and_escapes() {
        let text =
            "# comment\nNAME=\"Ubuntu\"\nVERSION_ID='22.04'\nID=ubuntu\nPRETTY_NAME=\"Say \\\"hi\\\"\"\nbroken line\n";
        let fields = parse_os_release(text);
        assert_eq!(fields["NAME"], "Ubuntu");
        assert_eq!(fields["VERSION_ID"], "22.04");
        assert_eq!(fields["ID"], "ubuntu");
        assert_eq!(fields["PRETTY_NAME"], "Say \"hi\"");
        assert_eq!(fields.len(), 4);
    }
}
