//! The daemon's log as `tracing` events. [`install`] writes them to stderr (daemon.log when the
//! daemon was started on demand, the journal under systemd, `docker logs` in a container) one
//! line per event, in the shape the daemon has always used, timestamp first:
//!
//! ```text
//! 2026-12-01T12:59:02Z netns-g@eth1.json: bound 198.18.140.87/24 from 198.18.140.1
//! ```
//!
//! that is `TIMESTAMP [KEY: ]MESSAGE[ FIELD=VALUE]...`: the timestamp in RFC 3339 (UTC, whole
//! seconds), `KEY` the event's `key` field (the lease's record file), then any other field (the
//! Docker watcher's `container`). A program embedding the daemon may install its own
//! subscriber instead and receive the same fields.

use std::fmt::{self, Display, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Makes [`DaemonLine`] on stderr the process's subscriber, unless one is installed already
/// (a program embedding the daemon keeps its own).
pub fn install() {
    let _ = tracing::subscriber::set_global_default(subscriber(std::io::stderr));
}

/// The subscriber [`install`] installs, writing to `make_writer`.
pub fn subscriber<W>(make_writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .event_format(DaemonLine)
        .with_writer(make_writer)
        .finish()
}

/// One daemon log line as an event. The daemon's lines about one lease start with its record's
/// file name (`netns-g@eth1.json: ...`): that prefix becomes the `key` field, so a subscriber can
/// tell leases apart without parsing messages.
pub fn daemon_event(line: impl Display) {
    let line = line.to_string();
    match line.split_once(": ").filter(|(key, _)| is_record_key(key)) {
        Some((key, message)) => tracing::info!(key, "{message}"),
        None => tracing::info!("{line}"),
    }
}

/// A record's file name: `.json` at the end and no space (messages such as "lease X: ..." or
/// "SIGHUP: ..." are not keys).
fn is_record_key(text: &str) -> bool {
    text.ends_with(".json") && !text.contains(char::is_whitespace)
}

/// The event format: `TIMESTAMP [KEY: ]MESSAGE[ FIELD=VALUE]...` on one line. The fmt layer
/// formats the whole line first and hands it to the writer at once, so on unbuffered stderr a
/// line is one write(2) and lines of concurrent events never interleave.
pub struct DaemonLine;

impl<S, N> FormatEvent<S, N> for DaemonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = LineFields::default();
        event.record(&mut fields);
        write!(writer, "{}", crate::inspect::rfc3339(crate::attach::now_unix()))?;
        if let Some(key) = &fields.key {
            write!(writer, " {key}:")?;
        }
        write!(writer, " {}", fields.message)?;
        for (name, value) in &fields.others {
            write!(writer, " {name}={value}")?;
        }
        writeln!(writer)
    }
}

/// An event's fields, as [`DaemonLine`] prints them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineFields {
    pub message: String,
    pub key: Option<String>,
    /// Every other field, in the order the event gives them.
    pub others: Vec<(&'static str, String)>,
}

impl LineFields {
    fn set(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "key" => self.key = Some(value),
            name => self.others.push((name, value)),
        }
    }
}

impl Visit for LineFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // A message is `format_args!`, whose Debug is its Display; other values keep Debug.
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.set(field, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Every write(2)-equivalent call the subscriber makes, in order.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<String>>>);

    impl std::io::Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Writes {
        type Writer = Writes;
        fn make_writer(&'w self) -> Writes {
            self.clone()
        }
    }

    /// The writes `emit` causes under the daemon's subscriber.
    fn written(emit: impl FnOnce()) -> Vec<String> {
        let writes = Writes::default();
        tracing::subscriber::with_default(subscriber(writes.clone()), emit);
        let lines = writes.0.lock().unwrap().clone();
        lines
    }

    /// The line without its timestamp, after checking the timestamp's shape
    /// (`YYYY-MM-DDTHH:MM:SSZ`).
    fn after_timestamp(line: &str) -> &str {
        let (stamp, rest) = line.split_at(20);
        let shape: String =
            stamp.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
        assert_eq!(shape, "9999-99-99T99:99:99Z", "timestamp first: {line:?}");
        rest
    }

    /// The fields of every event `emit` causes.
    fn fields_of(emit: impl FnOnce()) -> Vec<LineFields> {
        struct Recorder(Arc<Mutex<Vec<LineFields>>>);
        impl<S: Subscriber> tracing_subscriber::Layer<S> for Recorder {
            fn on_event(&self, event: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
                let mut fields = LineFields::default();
                event.record(&mut fields);
                self.0.lock().unwrap().push(fields);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Recorder(Arc::clone(&seen)));
        tracing::subscriber::with_default(subscriber, emit);
        let fields = seen.lock().unwrap().drain(..).collect();
        fields
    }

    #[test]
    fn a_lease_line_keeps_its_shape_in_one_write_and_its_key_becomes_a_field() {
        let line = "netns-g@eth1.json: bound 198.18.0.5/24 from 198.18.0.1";
        let writes = written(|| daemon_event(format_args!("{line}")));
        assert_eq!(writes.len(), 1, "one write per line: {writes:?}");
        assert_eq!(after_timestamp(&writes[0]), format!(" {line}\n"));
        assert_eq!(
            fields_of(|| daemon_event(line)),
            [LineFields {
                message: "bound 198.18.0.5/24 from 198.18.0.1".into(),
                key: Some("netns-g@eth1.json".into()),
                others: vec![],
            }]
        );
    }

    #[test]
    fn a_line_about_no_lease_has_no_key() {
        for line in [
            "SIGHUP: configuration reloaded from /etc/lanyard/lanyard.toml",
            "lease netns-g@eth1.json: cannot read it",
            "lanyard daemon serving /var/lib/lanyard with 0 lease(s)",
        ] {
            let writes = written(|| daemon_event(line));
            assert_eq!(writes.len(), 1, "{writes:?}");
            assert_eq!(after_timestamp(&writes[0]), format!(" {line}\n"));
            let fields = fields_of(|| daemon_event(line));
            assert_eq!(fields[0].key, None, "{line}");
            assert_eq!(fields[0].message, line);
        }
    }

    #[test]
    fn other_fields_follow_the_message() {
        let writes =
            written(|| tracing::info!(key = "docker-web@eth1.json", container = "web", "wired"));
        assert_eq!(after_timestamp(&writes[0]), " docker-web@eth1.json: wired container=web\n");
    }
}
