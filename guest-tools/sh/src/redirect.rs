//! Redirections: files are opened with std, then moved onto their fd with `dup2`; the old fd is
//! saved above 9 (`dup(fd, 10)`) and put back afterwards.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::IntoRawFd;

use crate::ast::{Redir, RedirOp, RedirTarget};
use crate::shell::{Flow, Res, Shell};
use crate::subshell::ChildJob;

/// Here-documents up to this size go through a pipe written at once; larger ones are fed by a
/// child process so that neither side blocks.
const HEREDOC_DIRECT: usize = 4096;

/// The script's fds are 0..=9 (as in dash, a redirection names one digit).
pub const SCRIPT_FDS: u32 = 10;

/// Fds the host reserves in every guest process, which the script's fds of the same number
/// cannot be. Under kiln (guest-tools/ABI.md) fd 3 is the rootfs preopen that wasi-libc resolves
/// every path through: a `dup2` over it would break every later path lookup of the process.
#[cfg(target_os = "wasi")]
const HOST_RESERVED: &[u32] = &[3];
#[cfg(not(target_os = "wasi"))]
const HOST_RESERVED: &[u32] = &[];

/// First fd the shell uses for itself. Between the script's fds and these sit the real fds
/// that stand for the reserved script fds: script fd `HOST_RESERVED[i]` is real fd
/// `SCRIPT_FDS + i` (so 3 is kept at 10 on WASI; natively nothing is reserved).
///
/// Children inherit that layout: child fd `j` (`j < SHELL_FD_MIN`) is this process's real fd
/// `j`. A script fd the host reserves therefore reaches a child at `SCRIPT_FDS + i`, never at
/// its own number: the child's fd 3 is always the rootfs preopen (`spawn` ignores `fds[3]`),
/// so a program other than this shell does not see the script's fd 3 (as if it were closed
/// for it). A child shell, subshell or script, finds it at `SCRIPT_FDS + i` and keeps it there
/// as its own script fd 3, so `( echo >&3 )`, `{ ...; } 3>f` and `sh -c 'echo >&3'` work.
/// A subshell's state pipe comes after those, at `SHELL_FD_MIN`.
pub const SHELL_FD_MIN: u32 = SCRIPT_FDS + HOST_RESERVED.len() as u32;

/// The real fd that holds the script's fd `fd`.
pub fn real_fd(fd: u32) -> u32 {
    match HOST_RESERVED.iter().position(|&r| r == fd) {
        Some(i) => SCRIPT_FDS + i as u32,
        None => fd,
    }
}

/// Whether `fd` is open (a real fd).
fn is_open(fd: u32) -> bool {
    match kiln_rt::dup(fd, SHELL_FD_MIN) {
        Ok(copy) => {
            let _ = kiln_rt::close(copy);
            true
        }
        Err(_) => false,
    }
}

/// What to put back when a redirection scope ends.
#[derive(Debug, Default)]
pub struct Saved {
    /// (fd, saved copy or `None` when it was closed, whether the script could see it).
    entries: Vec<(u32, Option<u32>, bool)>,
}

/// dash's wording for an errno.
pub fn errmsg(e: &io::Error, creating: bool) -> String {
    match e.kind() {
        io::ErrorKind::NotFound if creating => "Directory nonexistent".into(),
        io::ErrorKind::NotFound => "No such file".into(),
        io::ErrorKind::PermissionDenied => "Permission denied".into(),
        io::ErrorKind::IsADirectory => "Is a directory".into(),
        io::ErrorKind::NotADirectory => "Not a directory".into(),
        io::ErrorKind::AlreadyExists => "File exists".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

impl Shell {
    /// Makes `fd` refer to `src`'s open file (closing `src`), saving `fd` first.
    pub fn install_fd(&mut self, src: u32, fd: u32, saved: &mut Saved) -> io::Result<()> {
        self.save_fd(fd, saved);
        let real = real_fd(fd);
        if src != real {
            kiln_rt::dup2(src, real)?;
            let _ = kiln_rt::close(src);
        }
        self.set_user_fd(fd, true);
        Ok(())
    }

    /// At startup: which of the script's fds the process was given.
    pub fn detect_user_fds(&mut self) {
        for fd in 0..SCRIPT_FDS {
            self.set_user_fd(fd, is_open(real_fd(fd)));
        }
    }

    /// The fd table a child starts with ([`kiln_rt::Spawn::fds`]), `SHELL_FD_MIN` entries:
    /// the script's open fds where [`SHELL_FD_MIN`] says, nothing of the shell's own.
    pub fn fd_table(&self) -> Vec<u32> {
        let mut fds = vec![kiln_rt::CLOSED; SHELL_FD_MIN as usize];
        for fd in (0..SCRIPT_FDS).filter(|&fd| self.user_fd(fd)) {
            let real = real_fd(fd);
            if let Some(slot) = usize::try_from(real).ok().and_then(|i| fds.get_mut(i)) {
                *slot = real;
            }
        }
        // The host gives `fds[3]` to Linux children (a WASI child's fd 3 is its rootfs, and a
        // child shell finds the script's fd 3 where this one keeps it).
        if self.user_fd(3) {
            fds[3] = real_fd(3);
        }
        fds
    }

    fn set_user_fd(&mut self, fd: u32, open: bool) {
        if let Some(slot) = usize::try_from(fd)
            .ok()
            .and_then(|i| self.user_fds.get_mut(i))
        {
            *slot = open;
        }
    }

    pub fn user_fd(&self, fd: u32) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.user_fds.get(i).copied())
            .unwrap_or(false)
    }

    /// Records `fd`'s current open file so that [`Shell::restore`] can put it back.
    pub fn save_fd(&mut self, fd: u32, saved: &mut Saved) {
        if saved.entries.iter().any(|(f, _, _)| *f == fd) {
            return;
        }
        let backup = kiln_rt::dup(real_fd(fd), SHELL_FD_MIN).ok();
        saved.entries.push((fd, backup, self.user_fd(fd)));
    }

    /// Undoes a redirection scope.
    pub fn restore(&mut self, saved: Saved) {
        for (fd, backup, was_user) in saved.entries.into_iter().rev() {
            let real = real_fd(fd);
            match backup {
                Some(b) => {
                    let _ = kiln_rt::dup2(b, real);
                    let _ = kiln_rt::close(b);
                }
                None => {
                    let _ = kiln_rt::close(real);
                }
            }
            self.set_user_fd(fd, was_user);
        }
    }

    /// Forgets the saved copies: the redirections stay (`exec`).
    pub fn keep(&mut self, saved: Saved) {
        for (_, backup, _) in saved.entries {
            if let Some(b) = backup {
                let _ = kiln_rt::close(b);
            }
        }
    }

    /// A new pipe whose ends are above the script's fds.
    pub fn pipe(&mut self) -> io::Result<(u32, u32)> {
        let (r, w) = kiln_rt::pipe()?;
        let r = high(r)?;
        let w = high(w)?;
        Ok((r, w))
    }

    /// Applies redirections. `Ok(Err(saved))` means one failed (its message printed, the
    /// earlier ones of the list still in `saved`); the caller restores either way.
    pub fn redirect(&mut self, redirs: &[Redir]) -> Res<Result<Saved, Saved>> {
        let mut saved = Saved::default();
        for r in redirs {
            if !self.redirect_one(r, &mut saved)? {
                return Ok(Err(saved));
            }
        }
        Ok(Ok(saved))
    }

    fn redirect_one(&mut self, r: &Redir, saved: &mut Saved) -> Res<bool> {
        let target = match &r.target {
            RedirTarget::HereDoc(body) => {
                let word = body.borrow().clone();
                let text = self.expand_string(&word)?;
                return Ok(self.heredoc(r.fd, text, saved));
            }
            RedirTarget::Word(w) => self.expand_string(w)?,
        };
        let path = crate::io::path(&target);
        let mut opts = OpenOptions::new();
        let creating = !matches!(r.op, RedirOp::In | RedirOp::InOut);
        match r.op {
            RedirOp::In => {
                opts.read(true);
            }
            RedirOp::Out | RedirOp::Clobber => {
                if r.op == RedirOp::Out && self.opt("noclobber") {
                    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
                    if regular {
                        self.error(format!(
                            "cannot create {}: File exists",
                            String::from_utf8_lossy(&target)
                        ));
                        return Ok(false);
                    }
                }
                opts.write(true).create(true).truncate(true);
            }
            RedirOp::Append => {
                opts.append(true).create(true);
            }
            RedirOp::InOut => {
                opts.read(true).write(true).create(true);
            }
            RedirOp::DupIn | RedirOp::DupOut => return self.dup_redirect(r.fd, &target, saved),
        }
        match opts.open(path) {
            Ok(f) => {
                let raw = f.into_raw_fd();
                let Some(src) = u32::try_from(raw).ok().and_then(|f| high(f).ok()) else {
                    return Ok(false);
                };
                if let Err(e) = self.install_fd(src, r.fd, saved) {
                    self.error(format!("{}: {}", r.fd, errmsg(&e, false)));
                    return Ok(false);
                }
                Ok(true)
            }
            Err(e) => {
                let verb = if creating { "create" } else { "open" };
                self.error(format!(
                    "cannot {verb} {}: {}",
                    String::from_utf8_lossy(&target),
                    errmsg(&e, creating)
                ));
                Ok(false)
            }
        }
    }

    fn dup_redirect(&mut self, fd: u32, target: &[u8], saved: &mut Saved) -> Res<bool> {
        if target == b"-" {
            self.save_fd(fd, saved);
            let _ = kiln_rt::close(real_fd(fd));
            self.set_user_fd(fd, false);
            return Ok(true);
        }
        let src = std::str::from_utf8(target)
            .ok()
            .and_then(|s| s.parse::<u32>().ok());
        let Some(src) = src.filter(|&s| s < SHELL_FD_MIN) else {
            self.error("Syntax error: Bad fd number");
            return Err(Flow::Exit(2));
        };
        if src == fd {
            return Ok(true);
        }
        if !self.user_fd(src) {
            self.error(format!("{src}: Bad file descriptor"));
            return Ok(false);
        }
        self.save_fd(fd, saved);
        match kiln_rt::dup2(real_fd(src), real_fd(fd)) {
            Ok(()) => {
                self.set_user_fd(fd, true);
                Ok(true)
            }
            Err(e) => {
                self.error(format!("{src}: {}", errmsg(&e, false)));
                Ok(false)
            }
        }
    }

    fn heredoc(&mut self, fd: u32, text: Vec<u8>, saved: &mut Saved) -> bool {
        let (r, w) = match self.pipe() {
            Ok(p) => p,
            Err(e) => {
                self.error(format!("pipe: {}", errmsg(&e, false)));
                return false;
            }
        };
        if text.len() <= HEREDOC_DIRECT {
            let _ = crate::io::write_fd(w, &text);
            let _ = kiln_rt::close(w);
        } else {
            let mut child_saved = Saved::default();
            let ok = self.install_fd(w, 1, &mut child_saved).is_ok();
            if ok {
                self.save_fd(0, &mut child_saved);
                let _ = kiln_rt::close(0);
                self.set_user_fd(0, false);
                if let Ok(pid) = self.spawn_child(ChildJob::Write(text)) {
                    self.orphans.push(pid);
                }
            }
            self.restore(child_saved);
        }
        self.install_fd(r, fd, saved).is_ok()
    }
}

/// Moves an fd the shell uses for itself above the script's fds.
pub fn high(fd: u32) -> io::Result<u32> {
    if fd >= SHELL_FD_MIN {
        return Ok(fd);
    }
    let n = kiln_rt::dup(fd, SHELL_FD_MIN)?;
    let _ = kiln_rt::close(fd);
    Ok(n)
}
