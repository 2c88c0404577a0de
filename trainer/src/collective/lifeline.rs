//! Knowing at once that another rank of the job has died ([`Lifeline`]). A rank that dies
//! inside a collective leaves the others waiting in MPI forever, and MPI does not say which
//! rank is gone; so every rank also holds one TCP connection to rank 0 (a star), opened at
//! start. The kernel closes a process's sockets however it ends, SIGKILL included: a
//! connection that ends without the peer's farewell byte means that rank is gone, and says
//! which one it was. A rank that ends cleanly sends the farewell first ([`Lifeline::farewell`]).
//!
//! Rank 0 listens on an ephemeral port of every interface and tells the others, over the
//! job's broadcast, the addresses its host name resolves to (plus loopback); a rank that
//! cannot reach any of them makes the whole job go on without a lifeline (said once, on rank
//! 0), since detection is a help and never a reason to refuse to train.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Collective;
use crate::error::Result;

/// The byte a rank sends before it closes its connection on a clean end.
const FAREWELL: u8 = b'F';

/// How long rank 0 waits for every other rank to connect, and a rank for each address.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// A rank whose connection ended without a farewell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The rank that is gone (0 when seen from another rank).
    pub rank: usize,
    /// How it was noticed (end of stream, or the socket's error).
    pub how: String,
}

/// This rank's end of the lifeline: one connection to every other rank on rank 0, one to
/// rank 0 on the others. Losses arrive on [`Lifeline::losses`].
pub struct Lifeline {
    /// The other end of each connection, with the rank there.
    peers: Vec<(usize, Mutex<TcpStream>)>,
    losses: Mutex<Option<Receiver<Lost>>>,
}

impl Lifeline {
    /// Connects every rank of `comm` with rank 0; every rank must call it at the same point
    /// (it makes collective calls). `Ok(None)` when the world has one rank, or when some rank
    /// could not connect (then `why` on rank 0 says so).
    pub fn join(comm: &dyn Collective) -> Result<(Option<Arc<Lifeline>>, Option<String>)> {
        if comm.size() < 2 {
            return Ok((None, None));
        }
        let (listener, mut offer) = if comm.is_root() {
            match listen() {
                Ok((l, addrs)) => (Some(l), addrs.into_bytes()),
                Err(e) => (None, format!("!{e}").into_bytes()),
            }
        } else {
            (None, Vec::new())
        };
        comm.broadcast_bytes(&mut offer)?;
        let offer = String::from_utf8_lossy(&offer).into_owned();
        let mut peers = Vec::new();
        let mut problem = offer
            .strip_prefix('!')
            .map(|e| format!("rank 0 cannot listen: {e}"));
        if problem.is_none() {
            match &listener {
                Some(l) => match accept(l, comm.size() - 1) {
                    Ok(p) => peers = p,
                    Err(e) => problem = Some(e),
                },
                None => match connect(&offer, comm.rank()) {
                    Ok(s) => peers.push((0, s)),
                    Err(e) => problem = Some(e),
                },
            }
        }
        // A reading handle on each connection, for its watcher.
        let mut readers = Vec::new();
        for (rank, s) in &peers {
            match s.try_clone() {
                Ok(r) => readers.push((*rank, r)),
                Err(e) => problem = Some(format!("rank {}: {e}", comm.rank())),
            }
        }
        // Every rank must agree whether there is a lifeline: a half one would report a loss
        // that is only a rank that never connected.
        let mut failed = [f64::from(u8::from(problem.is_some()))];
        comm.all_reduce_sum_f64(&mut failed)?;
        if failed[0] > 0.0 {
            let why = problem.unwrap_or_else(|| "another rank could not connect".into());
            return Ok((None, comm.is_root().then_some(why)));
        }
        let (tx, rx) = mpsc::channel();
        for (rank, r) in readers {
            watch(rank, r, tx.clone());
        }
        let peers = peers.into_iter().map(|(r, s)| (r, Mutex::new(s))).collect();
        Ok((
            Some(Arc::new(Lifeline {
                peers,
                losses: Mutex::new(Some(rx)),
            })),
            None,
        ))
    }

    /// Where losses arrive, each once (taken by the one who acts on them).
    pub fn losses(&self) -> Option<Receiver<Lost>> {
        self.losses.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// This rank ends cleanly: its peers will not take the end of its connections for a death.
    pub fn farewell(&self) {
        for (_, s) in &self.peers {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            let _ = s.write_all(&[FAREWELL]);
            let _ = s.flush();
        }
    }
}

/// Rank 0's listener and the addresses the others may reach it at, comma-separated.
fn listen() -> std::io::Result<(TcpListener, String)> {
    let l = TcpListener::bind("0.0.0.0:0")?;
    let port = l.local_addr()?.port();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut addrs: Vec<SocketAddr> = (host.trim(), port)
        .to_socket_addrs()
        .map(|a| a.filter(SocketAddr::is_ipv4).collect())
        .unwrap_or_default();
    addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
    addrs.dedup();
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    Ok((l, list.join(",")))
}

/// Rank 0 takes `n` connections, each announcing its rank, within [`CONNECT_WITHIN`].
fn accept(l: &TcpListener, n: usize) -> std::result::Result<Vec<(usize, TcpStream)>, String> {
    let until = Instant::now() + CONNECT_WITHIN;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut peers = Vec::new();
    while peers.len() < n {
        match l.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(CONNECT_WITHIN))
                    .map_err(|e| e.to_string())?;
                let mut rank = [0u8; 8];
                s.read_exact(&mut rank).map_err(|e| e.to_string())?;
                s.set_read_timeout(None).map_err(|e| e.to_string())?;
                peers.push((u64::from_le_bytes(rank) as usize, s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > until {
                    return Err(format!(
                        "{} of {n} ranks connected within {}s",
                        peers.len(),
                        CONNECT_WITHIN.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(peers)
}

/// A rank other than 0 connects to the first of rank 0's `addrs` it reaches and says its rank.
fn connect(addrs: &str, rank: usize) -> std::result::Result<TcpStream, String> {
    let mut last = String::from("no address");
    for a in addrs.split(',') {
        let Ok(addr) = a.parse::<SocketAddr>() else {
            continue;
        };
        match TcpStream::connect_timeout(&addr, CONNECT_WITHIN) {
            Ok(mut s) => {
                s.write_all(&(rank as u64).to_le_bytes())
                    .map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(format!("rank {rank} cannot reach rank 0 ({last})"))
}

/// Reads `s` on a thread of its own until it ends: a farewell first means a clean end,
/// anything else is the loss of `rank`.
fn watch(rank: usize, mut s: TcpStream, tx: Sender<Lost>) {
    std::thread::Builder::new()
        .name(format!("wsdscope-lifeline-{rank}"))
        .spawn(move || {
            let mut b = [0u8; 1];
            let how = match s.read(&mut b) {
                Ok(1) if b[0] == FAREWELL => return,
                Ok(0) => "its connection closed without a farewell".to_string(),
                Ok(_) => "it sent something other than a farewell".to_string(),
                Err(e) => format!("its connection failed: {e}"),
            };
            let _ = tx.send(Lost { rank, how });
        })
        .expect("cannot start a lifeline thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_ends_without_farewell_is_a_loss_and_one_with_it_is_not() {
        let (l, addrs) = listen().unwrap();
        let a = connect(&addrs, 1).unwrap();
        let b = connect(&addrs, 2).unwrap();
        let mut peers = accept(&l, 2).unwrap();
        peers.sort_by_key(|p| p.0);
        assert_eq!(peers.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
        let (tx, rx) = mpsc::channel();
        for (rank, s) in peers {
            watch(rank, s, tx.clone());
        }
        drop(tx);
        let clean = Lifeline {
            peers: vec![(0, Mutex::new(a))],
            losses: Mutex::new(None),
        };
        clean.farewell();
        drop(clean);
        drop(b); // rank 2 "dies": its socket closes with nothing said
        let lost: Vec<Lost> = rx.iter().collect();
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(lost[0].rank, 2);
        assert!(
            lost[0].how.contains("without a farewell"),
            "{}",
            lost[0].how
        );
    }

    #[test]
    fn a_rank_that_cannot_reach_rank_0_says_where_it_tried() {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let e = connect(&addr.to_string(), 3).unwrap_err();
        assert!(e.contains("rank 3 cannot reach rank 0"), "{e}");
        assert!(e.contains(&addr.to_string()), "{e}");
    }
}
