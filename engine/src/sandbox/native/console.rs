//! The relay between the terminal a native program opened in its container's devpts and the
//! one kiln's caller gave it.
//!
//! The caller's terminal (the secondary side of a pty on the host, whose primary side `kiln
//! run -it` or `kiln serve` drives) is put in raw mode, so the container's terminal alone does
//! echo, line editing and Ctrl-C; bytes pass both ways unchanged, and the caller's window size
//! is copied to the container's terminal whenever it changes (which signals SIGWINCH there).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use rustix::event::{poll, PollFd, PollFlags, Timespec};

/// How often the input side looks at the caller's window size while no input comes.
const RESIZE_CHECK: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 100_000_000,
};

/// A running relay; [`Relay::finish`] once the container's processes are gone.
pub(super) struct Relay {
    output: JoinHandle<()>,
    input: JoinHandle<()>,
    /// Closing it wakes the input side up to stop.
    stop: OwnedFd,
}

impl Relay {
    /// Waits (on its own threads) for the program to send its terminal over `sock`, then
    /// relays between it and `outer`.
    pub(super) fn start(sock: OwnedFd, outer: OwnedFd) -> std::io::Result<Relay> {
        let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (tx, rx) = std::sync::mpsc::channel::<(OwnedFd, OwnedFd)>();
        let output = std::thread::Builder::new()
            .name("kiln-console-out".into())
            .spawn(move || {
                let Some(inner) = super::sys::recv_fd(&sock) else {
                    return;
                };
                drop(sock);
                raw_mode(&outer);
                copy_size(&outer, &inner);
                if let (Ok(a), Ok(b)) = (inner.try_clone(), outer.try_clone()) {
                    let _ = tx.send((a, b));
                }
                drop(tx);
                let mut from = std::fs::File::from(inner);
                let mut to = std::fs::File::from(outer);
                let mut buf = vec![0u8; 16 * 1024];
                // Ends with EIO once every copy of the container's secondary side is closed.
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                        break;
                    }
                }
            })?;
        let input = std::thread::Builder::new()
            .name("kiln-console-in".into())
            .spawn(move || {
                if let Ok((inner, outer)) = rx.recv() {
                    relay_input(&outer, &inner, &stop_r);
                }
            })?;
        Ok(Relay {
            output,
            input,
            stop: stop_w,
        })
    }

    /// Lets the output side drain what the container wrote, then stops the input side.
    pub(super) fn finish(self) {
        let _ = self.output.join();
        drop(self.stop);
        let _ = self.input.join();
    }
}

/// Copies the caller's input to the container's terminal, and its window size on change.
fn relay_input(outer: &OwnedFd, inner: &OwnedFd, stop: &OwnedFd) {
    let mut to = match inner.try_clone() {
        Ok(f) => std::fs::File::from(f),
        Err(_) => return,
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut size = rustix::termios::tcgetwinsize(outer).ok();
    loop {
        let mut fds = [
            PollFd::new(outer, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&RESIZE_CHECK)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
        let [outer_poll, stop_poll] = &fds;
        let outer_ready = outer_poll.revents();
        // The write end closed: the container is gone.
        let stopped = !stop_poll.revents().is_empty();
        let now = rustix::termios::tcgetwinsize(outer).ok();
        if now.is_some() && now.map(dims) != size.map(dims) {
            size = now;
            copy_size(outer, inner);
        }
        if stopped {
            return;
        }
        if outer_ready.contains(PollFlags::IN) {
            match rustix::io::read(outer, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                        return;
                    }
                }
            }
        } else if outer_ready.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
            return;
        }
    }
}

fn dims(w: rustix::termios::Winsize) -> (u16, u16) {
    (w.ws_row, w.ws_col)
}

/// Gives `to` the window size of `from`.
fn copy_size(from: impl AsFd, to: impl AsFd) {
    if let Ok(w) = rustix::termios::tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(to, w);
    }
}

/// Puts the caller's terminal in raw mode: the container's terminal does the rest.
fn raw_mode(fd: impl AsFd) {
    if let Ok(mut t) = rustix::termios::tcgetattr(&fd) {
        t.make_raw();
        let _ = rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &t);
    }
}
