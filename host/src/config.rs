//! The configuration file, and where each setting came from.
//!
//! Every option can be set in three places. From the highest precedence to
//! the lowest:
//!
//! 1. a command-line flag (`--interval 5m`);
//! 2. its environment variable (`HW_AGENT_INTERVAL=5m`);
//! 3. the TOML file named by `--config` or `HW_AGENT_CONFIG`
//!    (`interval = "5m"`);
//!
//! and otherwise the built-in default. A file key is the option's long name
//! with `_` for `-` (`host_root`, `deadline_ms`, `include_identifiers`).
//! One file can serve every command: a key that belongs to another command
//! is ignored, a key that belongs to none is an error.
//!
//! The file's values become clap's defaults before the command line is
//! parsed, so they pass through the same value parsers as flags, and every
//! setting is validated before anything binds a port or loads a guest.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory as _, FromArgMatches as _};

use crate::cli::Cli;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "HW_AGENT_CONFIG";

/// Largest configuration or policy file read, in bytes; both are a few
/// hundred bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The origin of a setting's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    /// The named environment variable.
    Environment(String),
    /// The named key of the configuration file.
    File(String),
    Default,
}

/// The settings of the command that runs, each with its source.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The configuration file, when one was given.
    pub file: Option<PathBuf>,
    /// Long option name (`host-root`) to its source.
    pub settings: BTreeMap<String, Source>,
}

impl Sources {
    /// Says where a setting that did not come from the command line was
    /// set, such as "set by `interval` in /etc/hw-agent/config.toml".
    pub fn describe(&self, long: &str) -> Option<String> {
        match self.settings.get(long)? {
            Source::Environment(variable) => Some(format!("set by {variable}")),
            Source::File(key) => {
                let file = self.file.as_deref().map(Path::display).map(|path| path.to_string()).unwrap_or_default();
                Some(format!("set by `{key}` in {file}"))
            }
            Source::Flag | Source::Default => None,
        }
    }

    /// Appends to an error message that names `--option` where that option
    /// was set, when not on the command line, so an operator knows which
    /// file or variable to fix.
    pub fn annotate(&self, message: &str) -> String {
        let mut notes = Vec::new();
        for long in self.settings.keys() {
            let flag = format!("--{long}");
            let named = message.match_indices(&flag).any(|(at, _)| {
                !message[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            });
            if named && let Some(place) = self.describe(long) {
                notes.push(format!("{flag} was {place}"));
            }
        }
        if notes.is_empty() { message.to_owned() } else { format!("{message} ({})", notes.join("; ")) }
    }

    /// Lists the settings that differ from the defaults, grouped by source,
    /// for the configuration line `run` logs at start.
    pub fn summary(&self) -> String {
        let pick = |wanted: fn(&Source) -> bool| {
            self.settings.iter().filter(|(_, source)| wanted(source)).map(|(long, _)| long.as_str()).collect::<Vec<_>>()
        };
        let mut parts = Vec::new();
        if let Some(file) = &self.file {
            parts.push(format!("config file {}", file.display()));
        }
        for (label, names) in [
            ("file", pick(|source| matches!(source, Source::File(_)))),
            ("environment", pick(|source| matches!(source, Source::Environment(_)))),
            ("flags", pick(|source| matches!(source, Source::Flag))),
        ] {
            if !names.is_empty() {
                parts.push(format!("from the {label}: {}", names.join(", ")));
            }
        }
        if parts.is_empty() { "all defaults".to_owned() } else { parts.join("; ") }
    }
}

static SOURCES: OnceLock<Sources> = OnceLock::new();

/// Keeps the sources of this process's settings for [`sources`].
pub fn set_sources(sources: Sources) {
    let _ = SOURCES.set(sources);
}

/// Returns the sources of this process's settings, empty before [`set_sources`].
pub fn sources() -> Sources {
    SOURCES.get().cloned().unwrap_or_default()
}

/// A failure to parse the command line or the configuration file.
#[derive(Debug)]
pub enum ParseError {
    /// clap's own error, including `--help` and `--version`, which it prints.
    Clap(clap::Error),
    /// An invalid configuration file or value; exit status 64.
    Config(String),
}

/// The parsed command line with the configuration file applied.
#[derive(Debug)]
pub struct Parsed {
    pub cli: Cli,
    pub sources: Sources,
}

/// Parses `args` (the program name first) with the configuration file
/// named by `--config` or `HW_AGENT_CONFIG`, if any.
pub fn parse(args: Vec<OsString>) -> Result<Parsed, ParseError> {
    // Help and version never depend on a configuration file being valid.
    let file = config_path(&args)
        .or_else(|| std::env::var_os(CONFIG_ENV).filter(|value| !value.is_empty()).map(PathBuf::from))
        .filter(|_| !asks_for_help(&args));
    let mut command = Cli::command();
    let mut from_file = BTreeMap::new();
    if let Some(path) = &file {
        let table = read_table(path, "configuration file")?;
        for (key, value) in &table {
            let (long, text) = file_setting(&command, path, key, value)?;
            command = set_default(command, &long, &text);
            from_file.insert(long, key.clone());
        }
    }
    let args_copy = args.clone();
    let matches = match command.try_get_matches_from_mut(args) {
        Ok(matches) => matches,
        Err(error) => return Err(explain_value_source(error, &command, &args_copy, file.as_deref(), &from_file)),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(ParseError::Clap)?;
    let mut sources = Sources { file, settings: BTreeMap::new() };
    collect_sources(&command, &matches, &from_file, &mut sources.settings);
    Ok(Parsed { cli, sources })
}

/// Tells whether the arguments before a `--` terminator ask for help or the
/// version.
fn asks_for_help(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .map_while(|arg| arg.to_str().filter(|text| *text != "--"))
        .any(|text| matches!(text, "-h" | "--help" | "-V" | "--version" | "help"))
}

/// Finds `--config FILE` or `--config=FILE` before a `--` terminator.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            return None;
        }
        if text == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// Checks one file entry and returns the option's long name and the value
/// as clap parses it.
fn file_setting(
    command: &clap::Command,
    path: &Path,
    key: &str,
    value: &toml::Value,
) -> Result<(String, String), ParseError> {
    let origin = path.display();
    let long = key.replace('_', "-");
    if long == "config" {
        return Err(ParseError::Config(format!(
            "{origin}: `config` cannot be set in the configuration file; pass --config or set {CONFIG_ENV}"
        )));
    }
    let mut args = Vec::new();
    find_args(command, &long, &mut args);
    let Some(arg) = args.first() else {
        return Err(ParseError::Config(format!(
            "{origin}: unknown key `{key}`; a key is the long name of an option with `_` for `-`, such as `interval` \
             or `host_root` (`hw-agent run --help` lists them)"
        )));
    };
    let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
    let text = match value {
        toml::Value::Boolean(flag) if is_switch => flag.to_string(),
        toml::Value::String(text) if !is_switch => text.clone(),
        toml::Value::Integer(number) if !is_switch => number.to_string(),
        toml::Value::Float(number) if !is_switch => number.to_string(),
        _ if is_switch => {
            return Err(ParseError::Config(format!("{origin}: `{key}` = {value} is not allowed; use true or false")));
        }
        _ => {
            return Err(ParseError::Config(format!(
                "{origin}: `{key}` = {value} is not allowed; use a string or a number, as for --{long}"
            )));
        }
    };
    Ok((long, text))
}

/// Collects the named (non-positional) arguments with this long name in
/// `command` and all its subcommands.
fn find_args(command: &clap::Command, long: &str, found: &mut Vec<clap::Arg>) {
    found.extend(
        command
            .get_arguments()
            .filter(|arg| !arg.is_positional() && arg.get_long() == Some(long) && long != "help" && long != "version")
            .cloned(),
    );
    for subcommand in command.get_subcommands() {
        find_args(subcommand, long, found);
    }
}

/// Makes `value` the default of every argument named `long` in `command`
/// and its subcommands. A required option that has a value in the file is
/// no longer required on the command line.
fn set_default(command: clap::Command, long: &str, value: &str) -> clap::Command {
    let ids: Vec<String> = command
        .get_arguments()
        .filter(|arg| !arg.is_positional() && arg.get_long() == Some(long))
        .map(|arg| arg.get_id().to_string())
        .collect();
    let mut command = command;
    for id in ids {
        command = command.mut_arg(id, |arg| arg.default_value(value.to_owned()).required(false));
    }
    command.mut_subcommands(|subcommand| set_default(subcommand, long, value))
}

/// Rewrites clap's error for an invalid value that came from the file or
/// from an environment variable, so it names that place rather than only a
/// flag the user never passed.
fn explain_value_source(
    error: clap::Error,
    command: &clap::Command,
    args: &[OsString],
    file: Option<&Path>,
    from_file: &BTreeMap<String, String>,
) -> ParseError {
    if !matches!(error.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return ParseError::Clap(error);
    }
    let Some(ContextValue::String(flag)) = error.get(ContextKind::InvalidArg) else {
        return ParseError::Clap(error);
    };
    let Some(long) = flag.strip_prefix("--").map(|flag| flag.split([' ', '=']).next().unwrap_or(flag).to_owned())
    else {
        return ParseError::Clap(error);
    };
    let rendered = error.render().to_string();
    let detail: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.trim_start_matches("error: ").trim())
        .collect();
    let detail = detail.join(" ");
    let on_command_line = args
        .iter()
        .filter_map(|arg| arg.to_str())
        .any(|arg| arg == format!("--{long}") || arg.starts_with(&format!("--{long}=")));
    if on_command_line {
        return ParseError::Clap(error);
    }
    let mut found = Vec::new();
    find_args(command, &long, &mut found);
    let variable = found
        .iter()
        .filter_map(|arg| arg.get_env())
        .find(|name| std::env::var_os(name).is_some())
        .map(|name| name.to_string_lossy().into_owned());
    match (variable, from_file.get(&long), file) {
        (Some(variable), _, _) => ParseError::Config(format!("{variable}: {detail}")),
        (None, Some(key), Some(file)) => ParseError::Config(format!("{}: key `{key}`: {detail}", file.display())),
        _ => ParseError::Clap(error),
    }
}

/// Records the source of every option of the command that runs: the root's
/// global options and those of each subcommand on the way to it.
fn collect_sources(
    command: &clap::Command,
    matches: &ArgMatches,
    from_file: &BTreeMap<String, String>,
    settings: &mut BTreeMap<String, Source>,
) {
    for arg in command.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => {
                Source::Environment(arg.get_env().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default())
            }
            Some(ValueSource::DefaultValue) => match from_file.get(long) {
                Some(key) => Source::File(key.clone()),
                None => Source::Default,
            },
            _ => continue,
        };
        settings.insert(long.to_owned(), source);
    }
    if let Some((name, sub_matches)) = matches.subcommand()
        && let Some(subcommand) = command.find_subcommand(name)
    {
        collect_sources(subcommand, sub_matches, from_file, settings);
    }
}

/// Reads a small TOML file (the configuration or the collector policy) as
/// a table. It must be a regular file of at most 1 MiB, so a FIFO or
/// `/dev/zero` given by mistake fails at once instead of hanging. Parse
/// errors give the line, never the text: a file mistaken for this one can
/// hold a secret.
pub fn read_table(path: &Path, what: &str) -> Result<toml::Table, ParseError> {
    let text = read_small_file(path, what).map_err(ParseError::Config)?;
    parse_table(&text, &format!("{what} {}", path.display())).map_err(ParseError::Config)
}

/// Reads a UTF-8 text file of at most [`MAX_FILE_BYTES`]; `what` names it
/// in errors.
pub fn read_small_file(path: &Path, what: &str) -> Result<String, String> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|error| format!("failed to read the {what} {shown}: {error}"))?;
    if !metadata.is_file() {
        return Err(format!("the {what} {shown} is not a regular file; pass a TOML file"));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the {what} {shown} has {} bytes, more than the {MAX_FILE_BYTES} allowed; pass a TOML file",
            metadata.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|error| format!("failed to read the {what} {shown}: {error}"))?;
    String::from_utf8(bytes).map_err(|_| format!("the {what} {shown} is not UTF-8 text; pass a TOML file"))
}

/// Parses TOML text as a table; errors name `origin` and the line only.
pub fn parse_table(text: &str, origin: &str) -> Result<toml::Table, String> {
    toml::from_str(text).map_err(|error| toml_error(text, origin, &error))
}

/// Renders a TOML error with its line number and without toml's quote of
/// the source line.
pub fn toml_error(text: &str, origin: &str, error: &toml::de::Error) -> String {
    let line = error.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
    let at = line.map(|line| format!(" at line {line}")).unwrap_or_default();
    format!("invalid {origin}{at}: {}", error.message().trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("hw-agent").chain(list.iter().copied()).map(OsString::from).collect()
    }

    fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("config written");
        (dir, path)
    }

    fn config_error(result: Result<Parsed, ParseError>) -> String {
        match result {
            Err(ParseError::Config(message)) => message,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn file_values_apply_below_flags() {
        let (_dir, path) = config(
            "interval = \"5m\"\nnode_name = \"gpu-001\"\nlisten = \"127.0.0.1:9100\"\ninclude_identifiers = true\n\
             deadline_ms = 900\nlog = \"debug\"\nlog_format = \"json\"\n",
        );
        let path = path.to_string_lossy().into_owned();
        let parsed = parse(args(&["--config", &path, "run", "--interval", "90s"])).expect("parses");
        let Command::Run(run) = &parsed.cli.command else { panic!("run expected") };
        assert_eq!(run.interval, "90s", "the flag wins over the file");
        assert_eq!(run.node_name, "gpu-001", "a required option can come from the file");
        assert_eq!(run.listen, "127.0.0.1:9100");
        assert!(run.collect.include_identifiers);
        assert_eq!(run.collect.deadline_ms, Some(900));
        assert_eq!(parsed.cli.log.as_deref(), Some("debug"));
        assert_eq!(parsed.cli.log_format, crate::logging::LogFormat::Json);
        assert_eq!(parsed.sources.settings["interval"], Source::Flag);
        assert_eq!(parsed.sources.settings["node-name"], Source::File("node_name".to_owned()));
        assert_eq!(parsed.sources.describe("node-name").expect("described"), format!("set by `node_name` in {path}"));
        let note = parsed.sources.annotate("--node-name `x` is not a Node name");
        assert!(note.ends_with(&format!("(--node-name was set by `node_name` in {path})")), "{note}");
        assert!(parsed.sources.summary().contains("from the file: deadline-ms,"), "{}", parsed.sources.summary());

        // The same file serves `collect`: run's keys are ignored there.
        let parsed = parse(args(&["--config", &path, "collect"])).expect("parses");
        let Command::Collect(collect) = &parsed.cli.command else { panic!("collect expected") };
        assert_eq!(collect.collect.deadline_ms, Some(900));
    }

    #[test]
    fn invalid_file_names_key_and_range() {
        for (text, expected) in [
            ("intervall = \"5m\"\n", "unknown key `intervall`"),
            ("include_identifiers = \"yes\"\n", "`include_identifiers` = \"yes\" is not allowed; use true or false"),
            ("interval = [1, 2]\n", "`interval` = [1, 2] is not allowed; use a string or a number"),
            ("config = \"other.toml\"\n", "`config` cannot be set in the configuration file"),
            ("allocator = \"fast\"\n", "key `allocator`: invalid value 'fast' for '--allocator <ALLOCATOR>'"),
            ("deadline_ms = -5\n", "key `deadline_ms`: invalid value '-5'"),
            ("interval = \"5m\"\ninterval = \"6m\"\n", "duplicate key"),
        ] {
            let (_dir, path) = config(text);
            let path = path.to_string_lossy().into_owned();
            let message = config_error(parse(args(&["--config", &path, "collect"])));
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(message.contains(&path), "{text:?}: {message}");
        }
        let message = config_error(parse(args(&["--config", "/nonexistent/config.toml", "collect"])));
        assert!(message.contains("failed to read the configuration file /nonexistent/config.toml"), "{message}");
    }

    #[test]
    fn allowed_values_are_listed_for_enumerations() {
        let (_dir, path) = config("log_format = \"xml\"\n");
        let message = config_error(parse(args(&["--config", &path.to_string_lossy(), "collect"])));
        assert!(message.contains("[possible values: human, json]"), "{message}");
    }

    #[test]
    fn shipped_daemonset_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/kubernetes/config.toml");
        let path = path.to_string_lossy().into_owned();
        let parsed = parse(args(&["--config", &path, "run", "--node-name", "gpu-001"])).expect("parses");
        let Command::Run(run) = &parsed.cli.command else { panic!("run expected") };
        assert_eq!(run.collect.host_root, PathBuf::from("/host"));
        assert_eq!(run.collect.policy.as_deref(), Some(Path::new("/etc/hw-agent/policy.toml")));
        assert_eq!(parsed.cli.log_format, crate::logging::LogFormat::Json);
        run.kube.settings(&run.access).expect("the Kubernetes settings are valid");
    }

    #[test]
    fn config_path_is_found_before_the_terminator() {
        assert_eq!(config_path(&args(&["--config", "a.toml", "collect"])), Some(PathBuf::from("a.toml")));
        assert_eq!(config_path(&args(&["collect", "--config=b.toml"])), Some(PathBuf::from("b.toml")));
        assert_eq!(config_path(&args(&["plugins", "test", "--", "--config"])), None);
        assert_eq!(config_path(&args(&["collect"])), None);
    }
}
