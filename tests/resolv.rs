//! `write_guest_resolv_conf` against real processes whose root is a fake guest root, and against
//! /etc/netns. Needs root (chroot, mount namespaces, /etc/netns). Every test checks afterwards
//! that the host's /etc/resolv.conf is byte-for-byte what it was, and no ProcessRoot test ever
//! names a process whose root is the host's: even the "shares our mount namespace" guest is
//! chrooted into a fake root, so a broken check would write there and not on the host.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use lanyard::error::{ErrorKind, Result};
use lanyard::resolv::{write_guest_resolv_conf, GuestFiles, ResolvConf};

const HOST_RESOLV: &str = "/etc/resolv.conf";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests need root (chroot, mount namespaces)");
}

/// Bytes, identity and mtime of a file: a rewrite with the same bytes shows too.
fn file_snapshot(path: &Path) -> (Vec<u8>, u64, u64, i64, i64) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (bytes, meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec())
}

/// Run a test body, then assert the host's /etc/resolv.conf is unchanged, even when it failed.
/// If it did change, its bytes are put back before the test fails (see [`guarded_file`]).
fn guarded(body: impl FnOnce()) {
    require_root();
    guarded_file(Path::new(HOST_RESOLV), body);
}

/// Run `body`; if `path` changed meanwhile, write its old bytes back (in place, through any
/// symlink, as the file was found), then fail saying so: a broken writer under test must not
/// leave the machine with a damaged resolver configuration. A body's own panic comes after.
fn guarded_file(path: &Path, body: impl FnOnce()) {
    let before = file_snapshot(path);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let after = file_snapshot(path);
    if before != after {
        let restored = if before.0 != after.0 {
            match fs::write(path, &before.0) {
                Ok(()) => "its bytes were written back".to_string(),
                Err(e) => format!("writing its bytes back FAILED ({e}): restore it by hand"),
            }
        } else {
            "its bytes are the same (rewritten in place or replaced)".to_string()
        };
        panic!("{} changed during the test; {restored}", path.display());
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_guard_puts_back_a_file_the_test_changed_and_fails() {
    // A file of our own stands in for the host's: the guard's restore is proven without ever
    // writing the real /etc/resolv.conf.
    let dir = TempDir::new("guard");
    let file = dir.0.join("resolv.conf");
    fs::write(&file, b"nameserver 192.0.2.1\n").unwrap();
    let caught = std::panic::catch_unwind(|| {
        guarded_file(&file, || {
            fs::write(&file, b"nameserver 203.0.113.66\n").unwrap();
            panic!("the writer under test went wrong");
        })
    });
    let panic = caught.expect_err("a changed file fails the test");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("changed during the test; its bytes were written back"), "{message}");
    assert_eq!(fs::read(&file).unwrap(), b"nameserver 192.0.2.1\n", "the old bytes are back");
    // An unchanged file lets the body's own outcome through.
    guarded_file(&file, || {});
}

fn dns() -> ResolvConf {
    ResolvConf {
        nameservers: vec!["192.0.2.53".parse().unwrap(), "2001:db8::53".parse().unwrap()],
        search: vec!["lan.example".into()],
        domain: Some("ignored.example".into()),
    }
}

const EXPECTED_BLOCK: &str = "# written by lanyard from DHCP on eth1\n\
                              nameserver 192.0.2.53\n\
                              nameserver 2001:db8::53\n\
                              search lan.example\n";

/// The writer on its own thread with a deadline: a FIFO opened for reading would block forever.
fn write(target: GuestFiles) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(write_guest_resolv_conf(&target, &dns(), "eth1"));
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("write_guest_resolv_conf hung")
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ly-resolv-{}-{n}-{tag}", std::process::id()));
        fs::create_dir(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Held while busybox is copied and while a child is forked: a child forked by another test
/// while a copy's write descriptor is open keeps it until its exec, and exec'ing that copy then
/// fails with ETXTBSY.
static FORK_LOCK: Mutex<()> = Mutex::new(());

fn fork_lock() -> std::sync::MutexGuard<'static, ()> {
    FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake guest root: bin/busybox and etc/.
fn fake_root(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    fs::create_dir_all(dir.0.join("bin")).unwrap();
    fs::create_dir_all(dir.0.join("etc")).unwrap();
    let _fork = fork_lock();
    fs::copy("/bin/busybox", dir.0.join("bin/busybox")).expect("copy /bin/busybox");
    dir
}

#[derive(Default, Clone)]
struct Setup {
    /// Own mount namespace (with mounts made private); false = shares ours.
    unshare: bool,
    /// Bind-mount the host's /etc/resolv.conf onto ROOT/etc/resolv.conf (needs `unshare`).
    bind_host_resolv: bool,
    /// Mount a procfs (the host's pid namespace) at ROOT/proc (needs `unshare`).
    mount_proc: bool,
    /// Mount a one-page tmpfs at ROOT/etc holding a resolv.conf with these bytes (needs
    /// `unshare`): a file system that fills up mid-write.
    tiny_etc_with: Option<Vec<u8>>,
}

/// A process chrooted into a fake root; killed and reaped on drop, before the root is removed.
struct Guest {
    child: Child,
    root: TempDir,
}

impl Guest {
    fn start(root: TempDir, setup: Setup) -> Guest {
        assert!(
            setup.unshare
                || !(setup.bind_host_resolv || setup.mount_proc || setup.tiny_etc_with.is_some())
        );
        let cstr = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let root_c = cstr(&root.0);
        let resolv_c = cstr(&root.0.join("etc/resolv.conf"));
        let proc_c = cstr(&root.0.join("proc"));
        let etc_c = cstr(&root.0.join("etc"));
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["sleep", "30"]).stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: only async-signal-safe syscalls on strings prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| {
                    if rc == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                let null = std::ptr::null();
                if setup.unshare {
                    check(libc::unshare(libc::CLONE_NEWNS))?;
                    // Private first, so no mount below propagates back to the host.
                    check(libc::mount(
                        null,
                        c"/".as_ptr(),
                        null,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ))?;
                }
                if setup.bind_host_resolv {
                    check(libc::mount(
                        c"/etc/resolv.conf".as_ptr(),
                        resolv_c.as_ptr(),
                        null,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                }
                if setup.mount_proc {
                    check(libc::mount(
                        c"proc".as_ptr(),
                        proc_c.as_ptr(),
                        c"proc".as_ptr(),
                        0,
                        std::ptr::null(),
                    ))?;
                }
                if let Some(bytes) = &setup.tiny_etc_with {
                    check(libc::mount(
                        c"tmpfs".as_ptr(),
                        etc_c.as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        c"size=4k,mode=755".as_ptr().cast(),
                    ))?;
                    let fd = libc::open(
                        resolv_c.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                    libc::close(fd);
                    if n != bytes.len() as isize {
                        return Err(std::io::Error::other("short write while preparing the guest"));
                    }
                }
                check(libc::chroot(root_c.as_ptr()))?;
                check(libc::chdir(c"/".as_ptr()))
            });
        }
        // spawn returns after the exec, so the chroot and mounts are in place from here on.
        let child = {
            let _fork = fork_lock();
            cmd.spawn().expect("start the fake guest")
        };
        Guest { child, root }
    }

    fn target(&self) -> GuestFiles {
        GuestFiles::ProcessRoot { pid: self.child.id() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.0.join(rel)
    }

    /// The guest's file as the guest sees it (its own mounts), through /proc/PID/root.
    fn read_inside(&self, rel: &str) -> Vec<u8> {
        fs::read(Path::new(&format!("/proc/{}/root", self.child.id())).join(rel)).unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn isolated() -> Setup {
    Setup { unshare: true, ..Setup::default() }
}

#[test]
fn plain_file_is_rewritten_in_place_keeping_options() {
    guarded(|| {
        let root = fake_root("plain");
        fs::write(
            root.0.join("etc/resolv.conf"),
            "nameserver 8.8.8.8\nsearch old.example\noptions ndots:0\n",
        )
        .unwrap();
        let ino = fs::metadata(root.0.join("etc/resolv.conf")).unwrap().ino();
        let guest = Guest::start(root, isolated());

        write(guest.target()).unwrap();
        let text = fs::read_to_string(guest.path("etc/resolv.conf")).unwrap();
        assert_eq!(text, format!("{EXPECTED_BLOCK}\noptions ndots:0\n"));
        assert_eq!(fs::metadata(guest.path("etc/resolv.conf")).unwrap().ino(), ino, "in place");

        // Again (a renewal): same file, not a second block.
        write(guest.target()).unwrap();
        assert_eq!(fs::read_to_string(guest.path("etc/resolv.conf")).unwrap(), text);
    });
}

#[test]
fn absolute_symlink_resolves_inside_the_guest_root() {
    guarded(|| {
        let name = format!("ly-real-resolv-{}.conf", std::process::id());
        let host_path = Path::new("/etc").join(&name);
        assert!(!host_path.exists(), "{} must not exist on the host", host_path.display());
        let root = fake_root("abs-link");
        fs::write(root.0.join("etc").join(&name), "options rotate\n").unwrap();
        symlink(format!("/etc/{name}"), root.0.join("etc/resolv.conf")).unwrap();
        let guest = Guest::start(root, isolated());

        write(guest.target()).unwrap();
        let inside = fs::read_to_string(guest.path(&format!("etc/{name}"))).unwrap();
        assert_eq!(inside, format!("{EXPECTED_BLOCK}\noptions rotate\n"));
        assert!(fs::symlink_metadata(guest.path("etc/resolv.conf")).unwrap().is_symlink());
        assert!(!host_path.exists(), "a file was created on the host");
    });
}

#[test]
fn dotdot_symlink_cannot_climb_out_of_the_guest_root() {
    guarded(|| {
        let root = fake_root("dotdot");
        fs::write(root.0.join("etc/target.conf"), "").unwrap();
        // From ROOT/etc, ten ".." would reach the host's / without RESOLVE_IN_ROOT.
        symlink("../../../../../../../../../../etc/target.conf", root.0.join("etc/resolv.conf"))
            .unwrap();
        let guest = Guest::start(root, isolated());

        write(guest.target()).unwrap();
        assert_eq!(fs::read_to_string(guest.path("etc/target.conf")).unwrap(), EXPECTED_BLOCK);
        assert!(!Path::new("/etc/target.conf").exists());
    });
}

#[test]
fn magic_links_to_the_host_root_are_refused() {
    guarded(|| {
        // With procfs in the guest, /proc/PID/root is a magic link to that process's root (here
        // the host's): only RESOLVE_NO_MAGICLINKS, then the dev+ino check, stand in the way.
        // /proc/self is the writer itself, whose root is the host's; the kernel reaches the
        // magic-link check for it. /proc/1 may already fail the ptrace access check (EACCES
        // on this machine, where pid 1 has capabilities we lack): refused either way.
        for (link, errno) in [
            ("/proc/self/root/etc/resolv.conf", Some(libc::ELOOP)),
            ("/proc/1/root/etc/resolv.conf", None),
            ("/proc/self/cwd/../../../../../etc/resolv.conf", Some(libc::ELOOP)),
        ] {
            let root = fake_root("magic");
            fs::create_dir(root.0.join("proc")).unwrap();
            symlink(link, root.0.join("etc/resolv.conf")).unwrap();
            let guest = Guest::start(root, Setup { mount_proc: true, ..isolated() });
            assert!(
                guest.path("proc").read_dir().unwrap().next().is_none(),
                "procfs must be mounted only in the guest's namespace"
            );

            let err = write(guest.target()).unwrap_err();
            if let Some(errno) = errno {
                assert_eq!(err.kind(), ErrorKind::Conflict, "{link}: {err}");
                assert_eq!(err.errno(), Some(errno), "{link}: {err}");
                assert!(err.to_string().contains("magic link"), "{err}");
            }
            assert!(fs::read_link(guest.path("etc/resolv.conf")).is_ok());
        }
    });
}

#[test]
fn directory_fifo_and_device_are_refused() {
    guarded(|| {
        type Make = fn(&Path);
        let cases: [(&str, Make); 3] = [
            ("directory", |p| fs::create_dir(p).unwrap()),
            ("FIFO", |p| {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
            }),
            ("character device", |p| {
                // /dev/null's numbers: harmless even if it were opened.
                nix::sys::stat::mknod(
                    p,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                    libc::makedev(1, 3),
                )
                .unwrap()
            }),
        ];
        for (kind, make) in cases {
            let root = fake_root("special");
            make(&root.0.join("etc/resolv.conf"));
            let guest = Guest::start(root, isolated());
            let err = write(guest.target()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict, "{kind}: {err}");
            assert!(err.to_string().contains(&format!("is a {kind}, not a regular file")), "{err}");
            let meta = fs::symlink_metadata(guest.path("etc/resolv.conf")).unwrap();
            match kind {
                "directory" => {
                    assert!(meta.is_dir());
                    assert_eq!(fs::read_dir(guest.path("etc/resolv.conf")).unwrap().count(), 0);
                }
                "FIFO" => assert!(meta.file_type().is_fifo()),
                _ => assert!(meta.file_type().is_char_device()),
            }
        }
    });
}

#[test]
fn bind_mount_of_the_hosts_file_is_refused() {
    guarded(|| {
        let root = fake_root("bind");
        fs::write(root.0.join("etc/resolv.conf"), "decoy\n").unwrap();
        let guest = Guest::start(root, Setup { bind_host_resolv: true, ..isolated() });
        // The bind mount lives only in the guest's namespace: here the decoy is still there.
        assert_eq!(fs::read_to_string(guest.path("etc/resolv.conf")).unwrap(), "decoy\n");

        let err = write(guest.target()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("the host's own /etc/resolv.conf"), "{err}");
        assert_eq!(fs::read_to_string(guest.path("etc/resolv.conf")).unwrap(), "decoy\n");
    });
}

#[test]
fn guest_sharing_our_mount_namespace_is_refused() {
    guarded(|| {
        let root = fake_root("shared-ns");
        fs::write(root.0.join("etc/resolv.conf"), "options x\n").unwrap();
        let guest = Guest::start(root, Setup::default());

        let err = write(guest.target()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(
            err.to_string().contains(
                "guest shares the host's mount namespace: refusing to write its resolv.conf"
            ),
            "{err}"
        );
        assert_eq!(fs::read_to_string(guest.path("etc/resolv.conf")).unwrap(), "options x\n");
    });
}

#[test]
fn missing_file_is_created_only_where_etc_exists() {
    guarded(|| {
        let guest = Guest::start(fake_root("create"), isolated());
        write(guest.target()).unwrap();
        let path = guest.path("etc/resolv.conf");
        assert_eq!(fs::read_to_string(&path).unwrap(), EXPECTED_BLOCK);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);

        let root = fake_root("no-etc");
        fs::remove_dir(root.0.join("etc")).unwrap();
        let guest = Guest::start(root, isolated());
        let err = write(guest.target()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(!guest.path("etc").exists());
    });
}

#[test]
fn dangling_symlink_is_not_followed_to_create_a_file() {
    guarded(|| {
        let root = fake_root("dangling");
        fs::create_dir(root.0.join("run")).unwrap();
        symlink("/run/stub-resolv.conf", root.0.join("etc/resolv.conf")).unwrap();
        let guest = Guest::start(root, isolated());

        let err = write(guest.target()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("dangling symlink"), "{err}");
        assert!(!guest.path("run/stub-resolv.conf").exists());
    });
}

#[test]
fn a_process_that_is_gone_is_not_found() {
    guarded(|| {
        let mut child = {
            let _fork = fork_lock();
            Command::new("/bin/busybox").arg("true").spawn().unwrap()
        };
        let pid = child.id();
        child.wait().unwrap();
        let err = write(GuestFiles::ProcessRoot { pid }).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    });
}

/// netns tests share /etc/netns: one at a time, so one's cleanup never removes another's parent.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// /etc/netns/ly-resolv-PID-TAG, removed on drop (with /etc/netns when this made it).
struct NetnsDir {
    name: String,
    dir: PathBuf,
    netns_existed: bool,
}

impl NetnsDir {
    fn new(tag: &str) -> NetnsDir {
        let name = format!("ly-resolv-{}-{tag}", std::process::id());
        let dir = Path::new("/etc/netns").join(&name);
        assert!(!dir.exists(), "{} is left over from an earlier run", dir.display());
        NetnsDir { name, dir, netns_existed: Path::new("/etc/netns").exists() }
    }

    fn target(&self) -> GuestFiles {
        GuestFiles::NetnsEtc { name: self.name.clone() }
    }
}

impl Drop for NetnsDir {
    fn drop(&mut self) {
        // remove_dir_all unlinks a symlink without following it.
        let _ = match fs::symlink_metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&self.dir),
            _ => fs::remove_file(&self.dir),
        };
        if !self.netns_existed {
            let _ = fs::remove_dir("/etc/netns");
        }
    }
}

#[test]
fn netns_file_is_created_then_rewritten() {
    guarded(|| {
        let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let netns = NetnsDir::new("write");
        write(netns.target()).unwrap();
        let file = netns.dir.join("resolv.conf");
        assert_eq!(fs::read_to_string(&file).unwrap(), EXPECTED_BLOCK);
        assert_eq!(fs::metadata(&netns.dir).unwrap().permissions().mode() & 0o7777, 0o755);
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o7777, 0o644);

        fs::write(&file, "nameserver 1.1.1.1\noptions edns0\n").unwrap();
        write(netns.target()).unwrap();
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("{EXPECTED_BLOCK}\noptions edns0\n")
        );
    });
}

#[test]
fn netns_bad_names_are_refused() {
    guarded(|| {
        let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let netns_existed = Path::new("/etc/netns").exists();
        for name in ["", ".", "..", "../..", "a/b", "/etc", "x\0y"] {
            let err = write(GuestFiles::NetnsEtc { name: name.into() }).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Usage, "{name:?}: {err}");
        }
        assert_eq!(Path::new("/etc/netns").exists(), netns_existed, "nothing created");
    });
}

#[test]
fn netns_symlinks_are_refused() {
    guarded(|| {
        let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let decoy = TempDir::new("decoy");
        fs::write(decoy.0.join("resolv.conf"), "decoy\n").unwrap();

        // The file is a symlink (to a decoy standing in for a host file).
        let netns = NetnsDir::new("link-file");
        fs::create_dir_all(&netns.dir).unwrap();
        symlink(decoy.0.join("resolv.conf"), netns.dir.join("resolv.conf")).unwrap();
        let err = write(netns.target()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        drop(netns);

        // The directory is a symlink.
        let netns = NetnsDir::new("link-dir");
        fs::create_dir_all("/etc/netns").unwrap();
        symlink(&decoy.0, &netns.dir).unwrap();
        let err = write(netns.target()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("is not a directory"), "{err}");
        drop(netns);

        assert_eq!(fs::read_to_string(decoy.0.join("resolv.conf")).unwrap(), "decoy\n");
    });
}

#[test]
fn netns_bind_mount_of_the_hosts_file_is_refused() {
    guarded(|| {
        let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let netns = NetnsDir::new("bind");
        fs::create_dir_all(&netns.dir).unwrap();
        let file = netns.dir.join("resolv.conf");
        fs::write(&file, "decoy\n").unwrap();
        let target = netns.target();
        let mount_point = file.clone();
        // The writer runs on a thread with its own mount namespace (unshare(CLONE_NEWNS) is
        // per thread), where the host's file is bind-mounted over the netns one.
        let result = std::thread::spawn(move || {
            let mount_c = CString::new(mount_point.as_os_str().as_bytes()).unwrap();
            let null = std::ptr::null();
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare");
            // SAFETY: plain syscalls on NUL-terminated strings that outlive them.
            unsafe {
                // Private first, so the bind mount never propagates back to the host.
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                assert_eq!(libc::mount(null, c"/".as_ptr(), null, flags, null.cast()), 0);
                let host = c"/etc/resolv.conf".as_ptr();
                assert_eq!(
                    libc::mount(host, mount_c.as_ptr(), null, libc::MS_BIND, null.cast()),
                    0
                );
            }
            let result = write_guest_resolv_conf(&target, &dns(), "eth1");
            // SAFETY: as above.
            assert_eq!(unsafe { libc::umount2(mount_c.as_ptr(), libc::MNT_DETACH) }, 0);
            result
        })
        .join()
        .expect("writer thread");
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("the host's own /etc/resolv.conf"), "{err}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "decoy\n");
    });
}

#[test]
fn a_write_that_fails_midway_restores_the_previous_file() {
    guarded(|| {
        // Kept lines bring the new file past the one-page tmpfs, the old one fits: after the
        // truncate, the single pwrite comes up short.
        let mut previous = String::new();
        while previous.len() < 4000 {
            previous.push_str("options ndots:1 timeout:2 attempts:3 rotate edns0 trust-ad\n");
        }
        let guest = Guest::start(
            fake_root("enospc"),
            Setup { tiny_etc_with: Some(previous.clone().into_bytes()), ..isolated() },
        );
        assert_eq!(guest.read_inside("etc/resolv.conf"), previous.as_bytes());

        let err = write(guest.target()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(err.to_string().contains("previous content restored"), "{err}");
        assert_eq!(String::from_utf8(guest.read_inside("etc/resolv.conf")).unwrap(), previous);
    });
}
