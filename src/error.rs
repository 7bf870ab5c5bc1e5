//! The one error type. Every error a user sees says what failed, on which object, and (where
//! there is one) what to do about it; the kind decides the exit code.

use std::fmt;

/// What sort of failure this is; decides the exit code and lets callers react (a rollback test
/// injects `Injected`, the CLI maps `Usage` and `Unsupported` to exit status 2).
/// It crosses the daemon's control socket by name (kebab-case), so a refusal keeps its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Bad input from the user: malformed address, name too long, gateway outside every subnet.
    Usage,
    /// Something lanyard deliberately does not do (a pipework feature, a driver missing here).
    Unsupported,
    /// A named object does not exist: container, namespace, interface, record.
    NotFound,
    /// The request collides with what exists: name taken, address in use, guest is the host.
    Conflict,
    /// The kernel refused a netlink request or a socket operation.
    Kernel,
    /// Filesystem or process I/O outside the kernel's networking.
    Io,
    /// The Docker Engine API failed or answered something unusable.
    Docker,
    /// A bounded wait ran out.
    Timeout,
    /// Not root, or a permission check failed.
    Permission,
    /// A failure injected by a test to prove rollback.
    Injected,
}

/// An error with its context: `message` says what failed and on which object; `source` keeps the
/// lower-level cause (an errno, a serde error) for the one-line report.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error { kind, message: message.into(), source: Some(source.into()) }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Unsupported, format!("unsupported by lanyard: {what}"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The raw OS error number of the cause, when the cause is one.
    pub fn errno(&self) -> Option<i32> {
        let source = self.source.as_deref()?;
        if let Some(io) = source.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        source.downcast_ref::<nix::errno::Errno>().map(|e| *e as i32)
    }

    /// Exit status for the CLI: 2 for bad input and unsupported requests, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::Usage | ErrorKind::Unsupported => 2,
            _ => 1,
        }
    }

    /// Add what a rollback could not undo to the error that caused it, so the user learns which
    /// objects were left behind and what to do; the kind stays the original failure's.
    pub fn with_leftovers(mut self, leftovers: &[String]) -> Self {
        if !leftovers.is_empty() {
            self.message = format!(
                "{}; rollback incomplete, left behind: {}",
                self.message,
                leftovers.join("; ")
            );
        }
        self
    }

    /// Prefix more context: `"attach web: " + message`.
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Attach context to any error on the way up: `.with_context(ErrorKind::Io, || format!(...))`.
pub trait ResultExt<T> {
    fn with_context<F, S>(self, kind: ErrorKind, message: F) -> Result<T>
    where
        F: FnOnce() -> S,
        S: Into<String>;
}

impl<T, E> ResultExt<T> for std::result::Result<T, E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn with_context<F, S>(self, kind: ErrorKind, message: F) -> Result<T>
    where
        F: FnOnce() -> S,
        S: Into<String>,
    {
        self.map_err(|e| Error::with_source(kind, message(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_joins_message_and_cause() {
        let err: Result<()> = Err(std::io::Error::from_raw_os_error(libc::EEXIST))
            .with_context(ErrorKind::Kernel, || "create bridge br0 in host namespace");
        let err = err.unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert!(err.to_string().starts_with("create bridge br0 in host namespace: "));
        assert_eq!(err.exit_code(), 1);
        assert_eq!(Error::unsupported("@VLAN").to_string(), "unsupported by lanyard: @VLAN");
        assert_eq!(Error::unsupported("x").exit_code(), 2);
    }

    #[test]
    fn leftovers_are_named_and_keep_the_kind() {
        let err = Error::new(ErrorKind::Injected, "failure injected AfterLink").with_leftovers(&[
            "link lyabc in the host namespace: busy (remove it: ip link del lyabc)".into(),
        ]);
        assert_eq!(err.kind(), ErrorKind::Injected);
        assert!(err.to_string().contains("rollback incomplete, left behind: link lyabc"), "{err}");
        let untouched = Error::usage("x").with_leftovers(&[]);
        assert_eq!(untouched.to_string(), "x");
    }
}
