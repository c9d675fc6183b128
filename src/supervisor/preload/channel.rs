//! The channel between forkyard and one preloader: a `SOCK_SEQPACKET` Unix socket
//! pair, one JSON message per packet (packet boundaries are kept, so no framing),
//! with descriptors attached to a packet as `SCM_RIGHTS`.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Largest message forkyard reads (a traceback's tail is far smaller).
const MAX_PACKET: usize = 1 << 20;

/// forkyard's end of the channel.
pub(crate) struct Channel {
    fd: AsyncFd<OwnedFd>,
}

impl Channel {
    /// A connected pair: forkyard's end (non-blocking, on the current runtime) and
    /// the preloader's (blocking, close-on-exec until `spawn` passes it on).
    #[allow(unsafe_code)]
    pub(crate) fn pair() -> io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let flags = OFlag::from_bits_truncate(fcntl(&ours, FcntlArg::F_GETFL)?);
        fcntl(&ours, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: an `OwnedFd` is open until it is dropped, which only the
        // `AsyncFd` that owns it does, and its `as_raw_fd` never changes.
        let fd = unsafe { AsyncFd::register(ours) }.map_err(io::Error::from)?;
        Ok((Channel { fd }, theirs))
    }

    /// Send one message with `fds` attached (they stay open on our side).
    pub(crate) async fn send(&self, message: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let iov = [IoSlice::new(message)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                    .map_err(io::Error::from)
            })
            .await
            .map(|_| ())
    }

    /// The next message, or `None` once the preloader closed its end.
    pub(crate) async fn recv(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; MAX_PACKET];
        let n = self
            .fd
            .async_io(Interest::READABLE, |fd| {
                let mut iov = [IoSliceMut::new(&mut buf)];
                recvmsg::<()>(fd.as_raw_fd(), &mut iov, None, MsgFlags::MSG_CMSG_CLOEXEC)
                    .map(|m| m.bytes)
                    .map_err(io::Error::from)
            })
            .await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[tokio::test]
    async fn packets_keep_their_bounds_and_carry_descriptors() {
        let (ours, theirs) = Channel::pair().unwrap();
        let (a, _b) = UnixDatagram::pair().unwrap();
        ours.send(b"{\"one\":1}", &[a.as_raw_fd()]).await.unwrap();
        ours.send(b"{\"two\":2}", &[]).await.unwrap();
        // The other end, read the way the preloader does.
        let mut buf = [0u8; 64];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            theirs.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        assert_eq!(msg.bytes, 9);
        let fds: Vec<RawFd> = msg
            .cmsgs()
            .unwrap()
            .flat_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds,
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(fds.len(), 1);
        nix::unistd::close(fds[0]).unwrap();
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(theirs.as_raw_fd(), &mut iov, None, MsgFlags::empty()).unwrap();
        assert_eq!(msg.bytes, 9);
        // And back; then the end closes.
        nix::sys::socket::send(theirs.as_raw_fd(), b"{\"ok\":true}", MsgFlags::empty()).unwrap();
        assert_eq!(ours.recv().await.unwrap().unwrap(), b"{\"ok\":true}");
        drop(theirs);
        assert_eq!(ours.recv().await.unwrap(), None);
    }
}
