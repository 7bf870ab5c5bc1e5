//! Writing DHCP-learned DNS settings into a guest's resolv.conf (`--set-resolv`).
//!
//! The one promise: the host's own /etc/resolv.conf is never written. A container controls
//! everything under its root, so every path is resolved inside that root (`openat2` with
//! `RESOLVE_IN_ROOT`), nothing but a regular file is ever opened for I/O, and the file finally
//! opened is compared (device and inode) with the host's before a byte is written.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};

use crate::error::{Error, ErrorKind, Result, ResultExt};

/// glibc's MAXNS (resolv.h): servers after the third are silently ignored, so writing more would
/// only mislead whoever reads the file.
pub const MAX_NAMESERVERS: usize = 3;

/// glibc before 2.26 kept at most 6 search domains (MAXDNSRCH); newer glibc has no limit, but
/// guests run old C libraries too.
pub const MAX_SEARCH_DOMAINS: usize = 6;

/// musl reads resolv.conf with `fgets` into 256 bytes and drops a longer line whole, and old glibc
/// kept 256 bytes of search list: a `search` line, newline included, stays within this.
pub const MAX_SEARCH_LINE: usize = 255;

/// A resolv.conf bigger than this is not one; refusing keeps a hostile guest from making us read
/// a huge file.
const MAX_PREVIOUS: u64 = 1 << 20;

/// Marks lanyard's block, so a later render (after a renewal) replaces it instead of stacking.
const HEADER: &str = "# written by lanyard from DHCP on ";

/// DNS settings learned from DHCP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub domain: Option<String>,
}

impl ResolvConf {
    /// The whole new file: lanyard's block (header, nameservers, search or domain) first, then
    /// every line of `previous` that is not a nameserver, search or domain line nor an earlier
    /// lanyard header (options, sortlist, comments survive). Deterministic, and rendering its
    /// own output again gives the same text. Servers and domains that a resolver would reject or
    /// that could break the file (whitespace, newlines from a hostile DHCP server) are dropped.
    pub fn render(&self, interface: &str, previous: &str) -> String {
        let mut out = format!("{HEADER}{}\n", printable(interface));

        let mut servers: Vec<IpAddr> = Vec::new();
        for server in &self.nameservers {
            if usable_server(server) && !servers.contains(server) {
                servers.push(*server);
            }
        }
        for server in servers.iter().take(MAX_NAMESERVERS) {
            match server {
                // A link-local server is unreachable without its zone; inside the guest that
                // zone is the interface DHCP ran on.
                IpAddr::V6(v6)
                    if crate::spec::is_ipv6_link_local(*server) && valid_ifname(interface) =>
                {
                    out.push_str(&format!("nameserver {v6}%{interface}\n"));
                }
                _ => out.push_str(&format!("nameserver {server}\n")),
            }
        }

        // `search` and `domain` are mutually exclusive (the last one wins, resolv.conf(5)), so
        // only one is written: the search list when DHCP gave one (option 119 is the more
        // specific answer), else the domain name (option 15).
        if let Some(line) = self.search_line() {
            out.push_str(&line);
            out.push('\n');
        } else if let Some(domain) = self.domain.as_deref().filter(|d| valid_domain(d)) {
            out.push_str(&format!("domain {domain}\n"));
        }

        let kept: Vec<&str> = previous.lines().filter(|line| !replaced(line)).collect();
        let first = kept.iter().position(|l| !l.trim().is_empty());
        let last = kept.iter().rposition(|l| !l.trim().is_empty());
        if let (Some(first), Some(last)) = (first, last) {
            out.push('\n');
            for line in &kept[first..=last] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// `search d1 d2 ...` within the count and length limits, first domains first (DHCP sends
    /// them in order of preference), duplicates and invalid names dropped.
    fn search_line(&self) -> Option<String> {
        let mut line = String::from("search");
        let mut taken: Vec<&str> = Vec::new();
        for domain in &self.search {
            if taken.len() == MAX_SEARCH_DOMAINS {
                break;
            }
            if !valid_domain(domain) || taken.contains(&domain.as_str()) {
                continue;
            }
            if line.len() + 1 + domain.len() + 1 > MAX_SEARCH_LINE {
                break;
            }
            line.push(' ');
            line.push_str(domain);
            taken.push(domain);
        }
        (!taken.is_empty()).then_some(line)
    }
}

/// Where the guest's resolv.conf is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFiles {
    /// A process's root (a container): `/proc/PID/root`, and its mount namespace
    /// `/proc/PID/ns/mnt`.
    ProcessRoot { pid: u32 },
    /// `netns:NAME` guests: `/etc/netns/NAME/resolv.conf`, which `ip netns exec` bind-mounts over
    /// /etc/resolv.conf. A file of the host, but a per-namespace one; /etc/netns/NAME/ is created
    /// (0755) when missing.
    NetnsEtc { name: String },
}

/// Write `conf` into the guest's resolv.conf, in place, keeping the file's unrelated lines.
///
/// Refused (nothing written) when the guest shares our mount namespace, when the path leads to
/// anything but a regular file, through a /proc magic link, or to the host's own
/// /etc/resolv.conf. A missing file is created (0644) when its directory exists in the guest.
pub fn write_guest_resolv_conf(
    target: &GuestFiles,
    conf: &ResolvConf,
    interface: &str,
) -> Result<()> {
    let host = host_resolv_ids()?;
    match target {
        GuestFiles::ProcessRoot { pid } => {
            let root = guest_root(*pid)?;
            let file = Target {
                label: format!("/etc/resolv.conf of process {pid}"),
                // Absolute symlinks (stub-resolv.conf) resolve against the guest's root;
                // magic links (/proc/1/root/...) are the one way out of it, so none is followed.
                resolve: ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
                nofollow: false,
            };
            write_through(&root, "etc/resolv.conf", &file, &host, conf, interface)
        }
        GuestFiles::NetnsEtc { name } => {
            validate_netns_name(name)?;
            let dir = netns_etc_dir(name)?;
            let file = Target {
                label: format!("/etc/netns/{name}/resolv.conf"),
                // This directory belongs to the host: nothing in it has a reason to be a link.
                resolve: ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
                nofollow: true,
            };
            write_through(&dir, "resolv.conf", &file, &host, conf, interface)
        }
    }
}

/// The name `ip netns` would accept as one path component under /etc/netns.
pub fn validate_netns_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        return Err(Error::usage(format!(
            "bad network namespace name {name:?}: it must be one path component (no '/', not \
             '.' or '..')"
        )));
    }
    Ok(())
}

/// Identity of a file: what "the same file" means across bind mounts and symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(stat: &FileStat) -> FileId {
        FileId { dev: stat.st_dev, ino: stat.st_ino }
    }
}

/// The host's /etc/resolv.conf as seen from our mount namespace: the name itself and, when it
/// is a symlink (systemd-resolved, resolvconf), the file it leads to. Failing to look is an
/// error: without these the guard below would be blind.
fn host_resolv_ids() -> Result<Vec<FileId>> {
    let mut ids = Vec::new();
    for flags in [AtFlags::AT_SYMLINK_NOFOLLOW, AtFlags::empty()] {
        match fstatat(AT_FDCWD, "/etc/resolv.conf", flags) {
            Ok(stat) => ids.push(FileId::of(&stat)),
            // No host file (or a dangling link): nothing there that could be overwritten.
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(e).with_context(ErrorKind::Io, || {
                    "stat the host's /etc/resolv.conf (needed to make sure it is never written)"
                });
            }
        }
    }
    Ok(ids)
}

/// The guest's root directory, refused when the guest shares our mount namespace (its
/// "resolv.conf" would then be the host's, or a file of the host's).
fn guest_root(pid: u32) -> Result<OwnedFd> {
    // Both lookups go through this one handle: if the process dies and its pid is reused, they
    // fail instead of mixing two processes.
    let proc_dir = openat(
        AT_FDCWD,
        format!("/proc/{pid}").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => Error::not_found(format!("no process {pid}: its resolv.conf is gone")),
        e => Error::with_source(ErrorKind::Io, format!("open /proc/{pid}"), e),
    })?;
    let ours = fstatat(AT_FDCWD, "/proc/self/ns/mnt", AtFlags::empty())
        .with_context(ErrorKind::Io, || "stat our mount namespace /proc/self/ns/mnt")?;
    let theirs = fstatat(&proc_dir, "ns/mnt", AtFlags::empty())
        .with_context(ErrorKind::Io, || format!("stat the mount namespace of process {pid}"))?;
    if FileId::of(&ours) == FileId::of(&theirs) {
        return Err(Error::conflict(format!(
            "process {pid}: guest shares the host's mount namespace: refusing to write its \
             resolv.conf"
        )));
    }
    openat(&proc_dir, "root", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(ErrorKind::Io, || format!("open the root directory of process {pid}"))
}

/// /etc/netns/NAME, created 0755 (with /etc/netns) when missing; never through a symlink.
fn netns_etc_dir(name: &str) -> Result<OwnedFd> {
    let etc = openat(
        AT_FDCWD,
        "/etc",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(ErrorKind::Io, || "open /etc")?;
    let netns = ensure_dir(&etc, "netns", "/etc/netns")?;
    ensure_dir(&netns, name, &format!("/etc/netns/{name}"))
}

fn ensure_dir(parent: &OwnedFd, name: &str, label: &str) -> Result<OwnedFd> {
    let open = || {
        openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    };
    match open() {
        Ok(dir) => return Ok(dir),
        Err(Errno::ENOENT) => {}
        Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
            return Err(Error::with_source(
                ErrorKind::Conflict,
                format!("{label} is not a directory (a symlink or a file): refusing to use it"),
                e,
            ));
        }
        Err(e) => return Err(Error::with_source(ErrorKind::Io, format!("open {label}"), e)),
    }
    let mode = Mode::from_bits_truncate(0o755);
    let created = match mkdirat(parent, name, mode) {
        Ok(()) => true,
        // Someone else (a concurrent attach) made it: fine, it is opened below like any other.
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(Error::with_source(ErrorKind::Io, format!("create {label}"), e)),
    };
    let dir = open().with_context(ErrorKind::Io, || format!("open {label} after creating it"))?;
    if created {
        // mkdir's mode passes through the umask; `ip netns exec` and readers need 0755.
        fchmod(&dir, mode).with_context(ErrorKind::Io, || format!("chmod 0755 {label}"))?;
    }
    Ok(dir)
}

/// How to find the file under its directory and what to call it in errors.
struct Target {
    label: String,
    resolve: ResolveFlag,
    nofollow: bool,
}

/// `openat2` under `dir`; retried on EAGAIN, which RESOLVE_IN_ROOT returns when a concurrent
/// rename might have let ".." escape, and which openat2(2) asks callers to retry.
fn open_under(
    dir: &OwnedFd,
    path: &str,
    flags: OFlag,
    mode: Mode,
    resolve: ResolveFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).mode(mode).resolve(resolve);
    let mut tries = 0;
    loop {
        match openat2(dir, path, how) {
            Err(Errno::EAGAIN | Errno::EINTR) if tries < 64 => tries += 1,
            result => return result,
        }
    }
}

/// Find, check, read, render and write in place.
fn write_through(
    dir: &OwnedFd,
    path: &str,
    target: &Target,
    host: &[FileId],
    conf: &ResolvConf,
    interface: &str,
) -> Result<()> {
    let label = target.label.as_str();
    let mut flags = OFlag::O_PATH;
    if target.nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    // O_PATH opens nothing: a FIFO that would block or a device whose open has side effects is
    // only looked at, and rejected, before any real open happens.
    let file = match open_under(dir, path, flags, Mode::empty(), target.resolve) {
        Ok(handle) => {
            check_file(&handle, label, host)?;
            reopen(&handle, label, host)?
        }
        Err(Errno::ENOENT) => create(dir, path, target, host)?,
        Err(e) => return Err(open_error(e, label)),
    };

    let mut previous = Vec::new();
    (&file)
        .take(MAX_PREVIOUS + 1)
        .read_to_end(&mut previous)
        .with_context(ErrorKind::Io, || format!("read {label}"))?;
    if previous.len() as u64 > MAX_PREVIOUS {
        return Err(Error::conflict(format!(
            "{label} is larger than {MAX_PREVIOUS} bytes: not a resolv.conf, refusing to rewrite it"
        )));
    }
    let content = conf.render(interface, &String::from_utf8_lossy(&previous));
    write_in_place(&file, content.as_bytes(), &previous, label)
}

fn open_error(e: Errno, label: &str) -> Error {
    match e {
        Errno::ENOSYS => Error::with_source(
            ErrorKind::Unsupported,
            format!(
                "unsupported by lanyard: writing {label} needs openat2 (Linux 5.6 or later) to \
                 stay inside the guest"
            ),
            e,
        ),
        Errno::ELOOP => Error::with_source(
            ErrorKind::Conflict,
            format!(
                "{label} leads through a /proc magic link, a symlink loop or a forbidden symlink \
                 (which could lead out of the guest): refusing to write it"
            ),
            e,
        ),
        Errno::EXDEV => Error::with_source(
            ErrorKind::Conflict,
            format!("{label} leads outside its directory: refusing to write it"),
            e,
        ),
        e => Error::with_source(ErrorKind::Io, format!("open {label}"), e),
    }
}

/// Refuse anything but a regular file, and the host's own resolv.conf however it was reached.
fn check_file(fd: &impl AsFd, label: &str, host: &[FileId]) -> Result<FileId> {
    let stat = fstat(fd).with_context(ErrorKind::Io, || format!("stat {label}"))?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        return Err(Error::conflict(format!(
            "{label} is a {}, not a regular file: refusing to write it",
            kind_name(kind)
        )));
    }
    let id = FileId::of(&stat);
    if host.contains(&id) {
        return Err(Error::conflict(format!(
            "{label} is the host's own /etc/resolv.conf (same device and inode): refusing to \
             write it"
        )));
    }
    Ok(id)
}

/// A real file description for the O_PATH handle, through /proc/self/fd: the same inode, so what
/// was checked is what is written, with no second path lookup a guest could race.
fn reopen(handle: &OwnedFd, label: &str, host: &[FileId]) -> Result<File> {
    let checked = check_file(handle, label, host)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .with_context(ErrorKind::Io, || format!("open {label} for writing"))?;
    // Same inode or nothing: guards against a /proc that is not what it should be.
    if check_file(&file, label, host)? != checked {
        return Err(Error::conflict(format!(
            "{label} changed while being opened: refusing to write it"
        )));
    }
    Ok(file)
}

/// Create a missing file. O_EXCL never follows a symlink and never opens an existing file, so a
/// dangling symlink (whose target would be created who knows where) is refused, not followed.
fn create(dir: &OwnedFd, path: &str, target: &Target, host: &[FileId]) -> Result<File> {
    let label = target.label.as_str();
    let mode = Mode::from_bits_truncate(0o644);
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let fd = open_under(dir, path, flags, mode, target.resolve).map_err(|e| match e {
        Errno::ENOENT => Error::with_source(
            ErrorKind::NotFound,
            format!("{label}: its directory does not exist: not creating it"),
            e,
        ),
        Errno::EEXIST => Error::with_source(
            ErrorKind::Conflict,
            format!("{label} is a dangling symlink (or appeared meanwhile): refusing to create it"),
            e,
        ),
        e => open_error(e, label),
    })?;
    check_file(&fd, label, host)?;
    // O_CREAT's mode passes through the umask; every process in the guest must read the file.
    fchmod(&fd, mode).with_context(ErrorKind::Io, || format!("chmod 0644 {label}"))?;
    Ok(File::from(fd))
}

/// Truncate and write through the same descriptor: Docker's resolv.conf is a bind mount, so a
/// rename over it fails with EBUSY. The content is complete before the first change and goes out
/// in one pwrite, so a failure leaves either the new file or (best effort) the old one back.
fn write_in_place(file: &File, content: &[u8], previous: &[u8], label: &str) -> Result<()> {
    file.set_len(0).with_context(ErrorKind::Io, || format!("truncate {label}"))?;
    let written = file.write_at(content, 0);
    let failure = match written {
        Ok(n) if n == content.len() => None,
        Ok(n) => Some(Error::new(
            ErrorKind::Io,
            format!("write {label}: only {n} of {} bytes written", content.len()),
        )),
        Err(e) => Some(Error::with_source(ErrorKind::Io, format!("write {label}"), e)),
    };
    if let Some(error) = failure {
        let restored = file.set_len(0).and_then(|()| file.write_all_at(previous, 0));
        return Err(match restored {
            Ok(()) => error.context("previous content restored"),
            Err(_) => error.context("previous content could not be restored"),
        });
    }
    file.sync_all().with_context(ErrorKind::Io, || format!("fsync {label}"))
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFLNK => "symlink",
        _ => "special file",
    }
}

/// Is this line one lanyard replaces? Keywords as glibc matches them: first word of the line.
fn replaced(line: &str) -> bool {
    if line.starts_with(HEADER) {
        return true;
    }
    matches!(line.split_whitespace().next(), Some("nameserver" | "search" | "domain"))
}

fn usable_server(server: &IpAddr) -> bool {
    !server.is_unspecified() && !server.is_multicast()
}

/// What the kernel accepts as an interface name (dev_valid_name), so it is safe as a zone id.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'%')
}

/// The interface name as it may appear in a comment line: no control characters, no newline.
fn printable(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

/// A DNS name a resolver would accept in `search`/`domain`: labels of letters, digits, '-' and
/// '_', 1 to 63 bytes, 253 in all, optionally ending in a dot. Anything else (spaces, newlines,
/// '#') could change the meaning of the file and comes from the network, so it is dropped.
fn valid_domain(domain: &str) -> bool {
    let name = domain.strip_suffix('.').unwrap_or(domain);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(servers: &[&str], search: &[&str], domain: Option<&str>) -> ResolvConf {
        ResolvConf {
            nameservers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            search: search.iter().map(|s| s.to_string()).collect(),
            domain: domain.map(str::to_string),
        }
    }

    #[test]
    fn render_replaces_dns_lines_and_keeps_the_rest() {
        let previous = "# Generated by Docker Engine.\n\
                        nameserver 8.8.8.8\n\
                        nameserver 8.8.4.4\n\
                        search old.example\n\
                        domain older.example\n\
                        options ndots:0 timeout:1\n\
                        sortlist 10.0.0.0/255.0.0.0\n";
        let text = conf(&["192.0.2.53", "2001:db8::53"], &["lan.example", "example"], None)
            .render("eth1", previous);
        assert_eq!(
            text,
            "# written by lanyard from DHCP on eth1\n\
             nameserver 192.0.2.53\n\
             nameserver 2001:db8::53\n\
             search lan.example example\n\
             \n\
             # Generated by Docker Engine.\n\
             options ndots:0 timeout:1\n\
             sortlist 10.0.0.0/255.0.0.0\n"
        );
    }

    #[test]
    fn render_is_idempotent_and_deterministic() {
        let c = conf(&["192.0.2.1"], &["a.example"], None);
        let once = c.render("eth1", "options rotate\n\n\n");
        let twice = c.render("eth1", &once);
        assert_eq!(once, twice);
        assert_eq!(once, c.render("eth1", "options rotate\n\n\n"));
        // A renewal with other servers replaces lanyard's block instead of adding a second one.
        let other = conf(&["192.0.2.2"], &[], Some("b.example")).render("eth1", &once);
        assert_eq!(
            other,
            "# written by lanyard from DHCP on eth1\n\
             nameserver 192.0.2.2\n\
             domain b.example\n\
             \n\
             options rotate\n"
        );
    }

    #[test]
    fn render_keeps_at_most_three_servers_deduplicated() {
        let text = conf(
            &[
                "192.0.2.1",
                "192.0.2.1",
                "0.0.0.0",
                "224.0.0.1",
                "192.0.2.2",
                "192.0.2.3",
                "192.0.2.4",
            ],
            &[],
            None,
        )
        .render("eth0", "");
        let servers: Vec<&str> = text.lines().filter(|l| l.starts_with("nameserver")).collect();
        assert_eq!(
            servers,
            ["nameserver 192.0.2.1", "nameserver 192.0.2.2", "nameserver 192.0.2.3"]
        );
    }

    #[test]
    fn render_limits_the_search_list() {
        let many: Vec<String> = (0..10).map(|i| format!("d{i}.example")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let text = conf(&[], &refs, None).render("eth0", "");
        assert!(text.contains(
            "\nsearch d0.example d1.example d2.example d3.example d4.example d5.example\n"
        ));

        let long: Vec<String> = (0..5).map(|i| format!("{}{i}.example", "x".repeat(60))).collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let text = conf(&[], &refs, None).render("eth0", "");
        let line = text.lines().find(|l| l.starts_with("search")).unwrap();
        assert!(line.len() < MAX_SEARCH_LINE, "{}", line.len());
        assert_eq!(line.split(' ').count(), 4, "only whole domains that fit: {line}");
    }

    #[test]
    fn render_drops_names_that_could_inject_lines() {
        let hostile = conf(
            &["192.0.2.1"],
            &["evil.example\nnameserver 6.6.6.6", "ok.example", "sp ace", "#x", "", "."],
            Some("x\noptions debug"),
        );
        let text = hostile.render("eth1\nnameserver 6.6.6.6", "");
        assert_eq!(
            text,
            "# written by lanyard from DHCP on eth1?nameserver?6.6.6.6\n\
             nameserver 192.0.2.1\n\
             search ok.example\n"
        );
        // No valid search list: the domain is used, when valid.
        assert_eq!(
            conf(&[], &["bad name"], Some("lan.example.")).render("eth0", ""),
            "# written by lanyard from DHCP on eth0\ndomain lan.example.\n"
        );
        assert_eq!(
            conf(&[], &[], Some("bad\ndomain")).render("eth0", "domain old\n"),
            "# written by lanyard from DHCP on eth0\n"
        );
    }

    #[test]
    fn render_scopes_link_local_v6_servers_to_the_interface() {
        let text = conf(&["fe80::1", "2001:db8::1"], &[], None).render("eth1", "");
        assert!(text.contains("nameserver fe80::1%eth1\n"), "{text}");
        assert!(text.contains("nameserver 2001:db8::1\n"), "{text}");
    }

    #[test]
    fn netns_names_are_single_components() {
        for bad in ["", ".", "..", "a/b", "/", "x\0y"] {
            let err = validate_netns_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Usage, "{bad:?}");
        }
        validate_netns_name(&"n".repeat(256)).unwrap_err();
        validate_netns_name("blue").unwrap();
        validate_netns_name("ly-resolv-1.a").unwrap();
    }
}
