//! Readable forms of a node report: a terminal table, the HTML summary in
//! the AIoD asset's `description.html`, a one-line summary and keywords.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{Accelerator, CollectorStatus, NodeReport};

/// Formats a byte count with binary units: `80 GiB`, `1.5 TiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() < 0.05 || value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Maps CPUID vendor strings to the names people use.
fn cpu_vendor_label(raw: &str) -> &str {
    match raw {
        "GenuineIntel" => "Intel",
        "AuthenticAMD" => "AMD",
        "HygonGenuine" => "Hygon",
        "CentaurHauls" => "Centaur",
        other => other,
    }
}

/// Groups accelerators by model into `(label, count)` pairs, largest group first.
fn accelerator_groups(accelerators: &[Accelerator]) -> Vec<(String, usize)> {
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for device in accelerators {
        *groups.entry(accelerator_label(device)).or_default() += 1;
    }
    let mut groups: Vec<(String, usize)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups
}

fn accelerator_label(device: &Accelerator) -> String {
    let model =
        device.model_name.clone().unwrap_or_else(|| format!("PCI device {}:{}", device.vendor_id, device.device_id));
    match &device.vendor {
        Some(vendor) if !model.to_lowercase().starts_with(&vendor.to_lowercase()) => format!("{vendor} {model}"),
        _ => model,
    }
}

fn cpu_line(report: &NodeReport) -> Option<String> {
    let cpu = report.cpu.as_ref()?;
    let mut models: Vec<String> = Vec::new();
    for package in &cpu.packages {
        let label = match (&package.vendor, &package.model_name) {
            (_, Some(model)) => model.clone(),
            (Some(vendor), None) => format!("{} CPU", cpu_vendor_label(vendor)),
            (None, None) => "unknown CPU".to_owned(),
        };
        if !models.contains(&label) {
            models.push(label);
        }
    }
    let sockets = if cpu.sockets == 1 { "1 socket".to_owned() } else { format!("{} sockets", cpu.sockets) };
    Some(format!("{}x {} ({sockets}, {} cores, {} threads)", cpu.sockets, models.join(" + "), cpu.cores, cpu.threads))
}

/// Formats a one-line summary of CPU, memory and accelerators.
pub fn summary_line(report: &NodeReport) -> String {
    let mut parts = Vec::new();
    parts.push(cpu_line(report).unwrap_or_else(|| "CPU unknown".to_owned()));
    parts.push(match &report.memory {
        Some(memory) => format!("{} RAM", human_bytes(memory.total_bytes)),
        None => "memory unknown".to_owned(),
    });
    parts.push(match &report.accelerators {
        Some(list) if list.is_empty() => "no accelerators".to_owned(),
        Some(list) => accelerator_groups(list)
            .iter()
            .map(|(label, count)| format!("{count}x {label}"))
            .collect::<Vec<_>>()
            .join(", "),
        None => "accelerators unknown".to_owned(),
    });
    parts.join(", ")
}

/// Formats a two-column summary for people at a terminal.
pub fn summary_table(report: &NodeReport) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let node = &report.node;
    let os = node.os.pretty_name.clone().or_else(|| node.os.name.clone()).unwrap_or_else(|| "unknown OS".to_owned());
    rows.push((
        "Node".to_owned(),
        format!(
            "{} ({}, kernel {}, {os})",
            node.hostname.as_deref().unwrap_or("unknown host"),
            node.architecture.as_deref().unwrap_or("unknown architecture"),
            node.kernel.as_deref().unwrap_or("unknown"),
        ),
    ));

    match &report.cpu {
        Some(cpu) => {
            rows.push(("CPU".to_owned(), cpu_line(report).unwrap_or_default()));
            for package in &cpu.packages {
                let mut line = format!(
                    "package {}: {}, {} cores, {} threads",
                    package.id,
                    package.vendor.as_deref().map(cpu_vendor_label).unwrap_or("unknown vendor"),
                    package.cores,
                    package.threads
                );
                if let Some(max) = package.max_mhz {
                    let _ = write!(line, ", up to {max:.0} MHz");
                }
                let caches: Vec<String> = package
                    .caches
                    .iter()
                    .map(|cache| {
                        let kind = match cache.cache_type.as_str() {
                            "Data" => "d",
                            "Instruction" => "i",
                            _ => "",
                        };
                        format!("L{}{kind} {} x{}", cache.level, human_bytes(cache.size_bytes), cache.instances)
                    })
                    .collect();
                if !caches.is_empty() {
                    let _ = write!(line, "; {}", caches.join(", "));
                }
                for core_type in &package.core_types {
                    let _ = write!(line, "; {} {}c/{}t", core_type.name, core_type.cores, core_type.threads);
                }
                rows.push((String::new(), line));
            }
            if !cpu.numa_nodes.is_empty() {
                rows.push((
                    "NUMA".to_owned(),
                    if cpu.numa_nodes.len() == 1 {
                        "1 node".to_owned()
                    } else {
                        format!("{} nodes", cpu.numa_nodes.len())
                    },
                ));
            }
        }
        None => rows.push(("CPU".to_owned(), "unknown".to_owned())),
    }

    rows.push((
        "Memory".to_owned(),
        match &report.memory {
            Some(memory) => {
                let mut line = human_bytes(memory.total_bytes);
                if let Some(swap) = memory.swap_total_bytes {
                    let _ = write!(line, ", swap {}", human_bytes(swap));
                }
                for pool in memory.hugepages.iter().filter(|pool| pool.total > 0) {
                    let _ = write!(line, ", {} x {} huge pages", pool.total, human_bytes(pool.page_size_bytes));
                }
                line
            }
            None => "unknown".to_owned(),
        },
    ));

    match &report.accelerators {
        None => rows.push(("Accelerators".to_owned(), "unknown".to_owned())),
        Some(list) if list.is_empty() => rows.push(("Accelerators".to_owned(), "none".to_owned())),
        Some(list) => {
            for (index, device) in list.iter().enumerate() {
                let memory = device.memory_bytes.map(human_bytes).unwrap_or_else(|| "memory unknown".to_owned());
                let driver = device.driver.as_deref().unwrap_or("no driver");
                let label = if index == 0 { "Accelerators" } else { "" };
                rows.push((
                    label.to_owned(),
                    format!("{} {}, {memory}, {driver}", device.pci_address, accelerator_label(device)),
                ));
            }
        }
    }

    match &report.storage {
        None => rows.push(("Storage".to_owned(), "unknown".to_owned())),
        Some(list) if list.is_empty() => rows.push(("Storage".to_owned(), "none".to_owned())),
        Some(list) => {
            for (index, device) in list.iter().enumerate() {
                let mut line = format!("{} {}", device.name, human_bytes(device.size_bytes));
                if let Some(transport) = &device.transport {
                    let _ = write!(line, " {transport}");
                }
                match device.rotational {
                    Some(true) => line.push_str(" (rotational)"),
                    Some(false) => line.push_str(" (solid state)"),
                    None => {}
                }
                if let Some(model) = &device.model {
                    let _ = write!(line, " {model}");
                }
                rows.push((if index == 0 { "Storage" } else { "" }.to_owned(), line));
            }
        }
    }

    match &report.network {
        None => rows.push(("Network".to_owned(), "unknown".to_owned())),
        Some(list) if list.is_empty() => rows.push(("Network".to_owned(), "none".to_owned())),
        Some(list) => {
            for (index, interface) in list.iter().enumerate() {
                let speed = interface
                    .speed_mbps
                    .map(|speed| format!("{speed} Mb/s"))
                    .unwrap_or_else(|| "speed unknown".to_owned());
                let kind = if interface.physical { "physical" } else { "virtual" };
                let driver = interface.driver.as_deref().unwrap_or("no driver");
                rows.push((
                    if index == 0 { "Network" } else { "" }.to_owned(),
                    format!(
                        "{} {kind}, {driver}, {speed}, MTU {}",
                        interface.name,
                        interface.mtu.map(|mtu| mtu.to_string()).unwrap_or_else(|| "?".to_owned())
                    ),
                ));
            }
        }
    }

    for (index, outcome) in report.collectors.iter().enumerate() {
        let mut line = format!("{} {} ({:.1} ms)", outcome.name, status_label(outcome.status), outcome.duration_ms);
        if let Some(error) = &outcome.error {
            let _ = write!(line, ": {error}");
        }
        rows.push((if index == 0 { "Collectors" } else { "" }.to_owned(), line));
    }

    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<width$}  {value}");
    }
    out
}

fn status_label(status: CollectorStatus) -> &'static str {
    match status {
        CollectorStatus::Ok => "ok",
        CollectorStatus::Error => "error",
        CollectorStatus::Timeout => "timeout",
        CollectorStatus::LimitExceeded => "limit_exceeded",
        CollectorStatus::Denied => "denied",
    }
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Renders the readable summary for the asset's `description.html`. Every value is
/// escaped, because collectors' strings come from the node.
pub fn summary_html(report: &NodeReport) -> String {
    let mut items = Vec::new();
    let node = &report.node;
    items.push(format!(
        "<li><b>Node</b>: {} ({}, Linux {}, {})</li>",
        escape_html(node.hostname.as_deref().unwrap_or("unknown host")),
        escape_html(node.architecture.as_deref().unwrap_or("unknown architecture")),
        escape_html(node.kernel.as_deref().unwrap_or("unknown")),
        escape_html(node.os.pretty_name.as_deref().or(node.os.name.as_deref()).unwrap_or("unknown OS")),
    ));
    items.push(format!(
        "<li><b>CPU</b>: {}</li>",
        escape_html(&cpu_line(report).unwrap_or_else(|| "unknown".to_owned()))
    ));
    items.push(format!(
        "<li><b>Memory</b>: {}</li>",
        report.memory.as_ref().map(|memory| human_bytes(memory.total_bytes)).unwrap_or_else(|| "unknown".to_owned())
    ));
    let accelerators = match &report.accelerators {
        None => "unknown".to_owned(),
        Some(list) if list.is_empty() => "none".to_owned(),
        Some(list) => accelerator_groups(list)
            .iter()
            .map(|(label, count)| format!("{count}x {}", escape_html(label)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    items.push(format!("<li><b>Accelerators</b>: {accelerators}</li>"));
    if let Some(storage) = &report.storage {
        let total: u64 = storage.iter().map(|device| device.size_bytes).sum();
        items.push(format!("<li><b>Storage</b>: {} devices, {} in total</li>", storage.len(), human_bytes(total)));
    }
    format!(
        "<p>Hardware reported by hw-agent {} ({}).</p><ul>{}</ul>",
        escape_html(&report.agent.version),
        escape_html(&report.schema),
        items.join("")
    )
}

/// Search keywords for the asset: architecture, CPU vendor, accelerator
/// vendors and models. AIoD casefolds keywords, so they are sent lowercase.
pub fn keywords(report: &NodeReport) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut add = |word: &str| {
        let word = word.trim().to_lowercase();
        if !word.is_empty() && word.len() <= 250 && !words.contains(&word) {
            words.push(word);
        }
    };
    if let Some(architecture) = &report.node.architecture {
        add(architecture);
    }
    if let Some(cpu) = &report.cpu {
        for package in &cpu.packages {
            if let Some(vendor) = &package.vendor {
                add(cpu_vendor_label(vendor));
            }
        }
    }
    if let Some(accelerators) = &report.accelerators {
        if !accelerators.is_empty() {
            add("gpu");
        }
        for device in accelerators {
            if let Some(vendor) = &device.vendor {
                add(vendor);
            }
            if let Some(model) = &device.model_name {
                add(model);
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(80 << 30), "80 GiB");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(escape_html("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
