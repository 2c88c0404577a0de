//! The control endpoint of a running job: a listener thread that accepts viewers on a Unix
//! socket (and, when asked, on TCP with a token), and one thread per connection that greets
//! the viewer, sends the events it missed from the session file, then the live ones, and
//! passes its commands to the engine. Nothing here can slow training: events reach a
//! connection through its own bounded queue ([`crate::live::Attached`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wsdscope_sessions::Notice;
use wsdscope_trainer::Command;

use super::stream::Stream;
use super::{Level, PROTOCOL, Reply, Request, VIEWER_BUFFER};
use crate::live::{Attached, Registered};

/// How long a new connection may take to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// The longest line a client may send.
const MAX_LINE: u64 = 1 << 20;
/// How often an idle connection looks whether its viewer has gone or dropped samples.
const TICK: Duration = Duration::from_millis(250);
/// How long a run that has ended waits for its viewers to receive the rest (their catch-up,
/// the last events) before it closes their connections.
const LAST_WORDS: Duration = Duration::from_secs(5);

/// The bound endpoints of one run, not yet serving ([`Server::start`]).
pub struct Server {
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<(TcpListener, String, String)>,
    session: Option<PathBuf>,
    attached: Attached,
}

impl Server {
    /// Binds the endpoints of a run recording to `session`: the Unix socket `SESSION.sock`
    /// (unless `no_socket`, or there is no session file) and, with `listen`, TCP on that
    /// address with a fresh token. `None` when there is nothing to listen on. A default
    /// socket that cannot be made is a warning on stderr, not an error; `--listen` is.
    pub fn open(
        session: Option<&Path>,
        listen: Option<&str>,
        no_socket: bool,
    ) -> Result<Option<Server>> {
        let unix = match session.filter(|_| !no_socket) {
            Some(s) => {
                let mut p = s.as_os_str().to_owned();
                p.push(".sock");
                let p = PathBuf::from(p);
                match bind_unix(&p) {
                    Ok(l) => Some((l, p)),
                    Err(e) => {
                        eprintln!("warning: {e:#}; the run goes on without a control socket");
                        None
                    }
                }
            }
            None => None,
        };
        let tcp = match listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .with_context(|| format!("--listen {addr}: cannot listen"))?;
                let local = l.local_addr()?.to_string();
                Some((l, local, token()?))
            }
            None => None,
        };
        if unix.is_none() && tcp.is_none() {
            return Ok(None);
        }
        Ok(Some(Server {
            unix,
            tcp,
            session: session.map(Path::to_path_buf),
            attached: Attached::default(),
        }))
    }

    /// The viewers' side of the live pipeline ([`crate::live::Live::start`]).
    pub fn attached(&self) -> Attached {
        self.attached.clone()
    }

    /// What to tell the user: how to attach.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some((_, p)) = &self.unix {
            out.push(format!("attach with: wsdscope attach {}", p.display()));
        }
        if let Some((_, addr, token)) = &self.tcp {
            out.push(format!(
                "listening on {addr}: wsdscope attach {addr} --token {token}"
            ));
        }
        out
    }

    /// Serves viewers on a thread of its own until the returned handle is dropped; their
    /// commands go to `commands`.
    pub fn start(self, commands: Sender<Command>) -> Result<Listening> {
        let stop = Arc::new(AtomicBool::new(false));
        let socket = self.unix.as_ref().map(|(_, p)| p.clone());
        let ctx = Arc::new(Shared {
            attached: self.attached,
            commands: Mutex::new(commands),
            session: self.session,
            token: self.tcp.as_ref().map(|(_, _, t)| t.clone()),
            uid: current_uid(),
            open: Mutex::default(),
        });
        let unix = self.unix.map(|(l, _)| l);
        let tcp = self.tcp.map(|(l, _, _)| l);
        for l in unix.iter() {
            l.set_nonblocking(true)?;
        }
        for l in tcp.iter() {
            l.set_nonblocking(true)?;
        }
        let flag = Arc::clone(&stop);
        let shared = Arc::clone(&ctx);
        let thread = std::thread::Builder::new()
            .name("attach-listener".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let mut idle = true;
                    if let Some(l) = &unix
                        && let Ok((s, _)) = l.accept()
                    {
                        idle = false;
                        serve(Stream::Unix(s), false, &ctx);
                    }
                    if let Some(l) = &tcp
                        && let Ok((s, _)) = l.accept()
                    {
                        idle = false;
                        let _ = s.set_nodelay(true);
                        serve(Stream::Tcp(s), true, &ctx);
                    }
                    if idle {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })?;
        Ok(Listening {
            stop,
            thread: Some(thread),
            socket,
            shared,
        })
    }
}

/// A serving endpoint; dropping it (after the run has ended) stops accepting, gives the
/// attached viewers up to [`LAST_WORDS`] to receive the rest, closes their connections and
/// removes the socket file.
pub struct Listening {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    socket: Option<PathBuf>,
    shared: Arc<Shared>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let t0 = std::time::Instant::now();
        while !self.shared.open().is_empty() && t0.elapsed() < LAST_WORDS {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A viewer that stopped reading has a thread blocked writing to it: this ends it.
        for s in self.shared.open().values() {
            s.shutdown();
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// What every connection thread shares.
struct Shared {
    attached: Attached,
    commands: Mutex<Sender<Command>>,
    session: Option<PathBuf>,
    /// The TCP token.
    token: Option<String>,
    uid: u32,
    /// The connections being served (a handle on each, to close it), by number.
    open: Mutex<std::collections::HashMap<u64, Stream>>,
}

impl Shared {
    fn open(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Stream>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection counted in [`Shared::open`] while it lives.
struct Open<'a>(&'a Shared, u64);

impl<'a> Open<'a> {
    fn new(shared: &'a Shared, s: &Stream) -> Option<Open<'a>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        shared.open().insert(id, s.try_clone().ok()?);
        Some(Open(shared, id))
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open().remove(&self.1);
    }
}

/// Binds a Unix socket only its owner may use. A socket file left by a run that died is
/// replaced; one that a live process answers on is not.
fn bind_unix(p: &Path) -> Result<UnixListener> {
    if p.exists() {
        if UnixStream::connect(p).is_ok() {
            bail!("{}: another process listens there", p.display());
        }
        std::fs::remove_file(p).with_context(|| format!("cannot replace {}", p.display()))?;
    }
    let l = UnixListener::bind(p).with_context(|| format!("cannot listen on {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to its owner", p.display()))?;
    Ok(l)
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// 128 random bits, hex.
fn token() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom for the --listen token")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Whether two tokens are equal, in time independent of where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Hands a new connection to a thread of its own.
fn serve(stream: Stream, tcp: bool, ctx: &Arc<Shared>) {
    let ctx = Arc::clone(ctx);
    let _ = std::thread::Builder::new()
        .name("attach-viewer".into())
        .spawn(move || {
            let Some(_open) = Open::new(&ctx, &stream) else {
                return;
            };
            if let Some(c) = Connection::greet(stream, tcp, &ctx) {
                c.run(&ctx);
            }
        });
}

/// One attached viewer.
struct Connection {
    /// Writes whole lines, one writer at a time (events here, replies from the command
    /// thread).
    out: Arc<Mutex<Stream>>,
    input: BufReader<Stream>,
    registered: Registered,
}

fn send(out: &Mutex<Stream>, text: &str) -> std::io::Result<()> {
    let mut s = out.lock().unwrap_or_else(|e| e.into_inner());
    s.write_all(text.as_bytes())
}

fn line(r: &Reply) -> String {
    let mut s = r.to_line();
    s.push('\n');
    s
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at the end of the stream.
fn read_line(input: &mut BufReader<Stream>) -> Option<String> {
    let mut buf = String::new();
    match input.by_ref().take(MAX_LINE).read_line(&mut buf) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(buf),
    }
}

impl Connection {
    /// Checks who is there and what it says first; refuses (one line, then closes) anything
    /// but a hello of this protocol from this user, with the token on TCP.
    fn greet(mut stream: Stream, tcp: bool, ctx: &Shared) -> Option<Connection> {
        let _ = stream.set_read_timeout(Some(HELLO_WITHIN));
        let refuse = |mut s: Stream, error: String| {
            let _ = s.write_all(line(&Reply::Refused { error }).as_bytes());
            s.shutdown();
            None
        };
        if !tcp && stream.peer_uid() != Some(ctx.uid) {
            return refuse(stream, "this run belongs to another user".into());
        }
        let mut input = BufReader::new(stream.try_clone().ok()?);
        let Some(first) = read_line(&mut input) else {
            stream.shutdown();
            return None;
        };
        match Request::parse(&first) {
            Ok(Request::Hello { protocol, token }) => {
                if protocol != PROTOCOL {
                    return refuse(
                        stream,
                        format!(
                            "protocol version {protocol} is not spoken here (this run speaks {PROTOCOL})"
                        ),
                    );
                }
                if let Some(want) = &ctx.token
                    && tcp
                    && !token.as_deref().is_some_and(|t| same_token(t, want))
                {
                    return refuse(
                        stream,
                        "wrong token (give the one the run printed at start: --token T)".into(),
                    );
                }
            }
            Ok(_) => return refuse(stream, "say hello first".into()),
            Err(e) => return refuse(stream, e),
        }
        let _ = stream.set_read_timeout(None);
        let Some(registered) = ctx.attached.register(VIEWER_BUFFER) else {
            return refuse(stream, "the run has ended".into());
        };
        let welcome = Reply::Welcome {
            protocol: PROTOCOL,
            session: ctx.session.as_ref().map(|p| p.display().to_string()),
            delivered: registered.delivered,
        };
        stream.write_all(line(&welcome).as_bytes()).ok()?;
        Some(Connection {
            out: Arc::new(Mutex::new(stream)),
            input,
            registered,
        })
    }

    /// Serves the viewer until it goes or the run ends.
    fn run(self, ctx: &Arc<Shared>) {
        let Connection {
            out,
            mut input,
            registered,
        } = self;
        let gone = Arc::new(AtomicBool::new(false));
        {
            let (out, gone, ctx) = (Arc::clone(&out), Arc::clone(&gone), Arc::clone(ctx));
            let _ = std::thread::Builder::new()
                .name("attach-commands".into())
                .spawn(move || {
                    while let Some(l) = read_line(&mut input) {
                        if l.trim().is_empty() {
                            continue;
                        }
                        let reply = match Request::parse(&l) {
                            Ok(Request::Hello { .. }) => Reply::Refused {
                                error: "already attached: hello comes once".into(),
                            },
                            Ok(r) => {
                                let cmd = r.name().to_string();
                                let c = r.command().expect("not a hello");
                                let tx = ctx.commands.lock().unwrap_or_else(|e| e.into_inner());
                                match tx.send(c) {
                                    Ok(()) => Reply::Accepted { cmd },
                                    Err(_) => Reply::Refused {
                                        error: "the run has ended; it takes no commands".into(),
                                    },
                                }
                            }
                            Err(error) => Reply::Refused { error },
                        };
                        if send(&out, &line(&reply)).is_err() {
                            break;
                        }
                    }
                    gone.store(true, Ordering::Relaxed);
                });
        }
        let Registered {
            delivered,
            events,
            dropped,
            notices,
        } = registered;
        if catch_up(&out, ctx.session.as_deref(), delivered).is_err() {
            return;
        }
        let mut told = 0;
        let mut buf = String::new();
        loop {
            if gone.load(Ordering::Relaxed) {
                return;
            }
            let first = match events.recv_timeout(TICK) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let n = dropped.load(Ordering::Relaxed);
                    let mut last = String::new();
                    if n != told {
                        last.push_str(&line(&Reply::Dropped { count: n }));
                    }
                    last.push_str(&line(&Reply::Ended));
                    let _ = send(&out, &last);
                    out.lock().unwrap_or_else(|e| e.into_inner()).shutdown();
                    return;
                }
            };
            buf.clear();
            if let Some(ev) = first {
                buf.push_str(&ev.to_json_line());
                buf.push('\n');
                for ev in events.try_iter().take(255) {
                    buf.push_str(&ev.to_json_line());
                    buf.push('\n');
                }
            }
            for n in std::mem::take(&mut *notices.lock().unwrap_or_else(|e| e.into_inner())) {
                let (level, text) = match n {
                    Notice::Retrying(m) => (Level::Warn, m),
                    Notice::Recovered(m) => (Level::Info, m),
                    Notice::MustStop(m) => (Level::Error, m),
                };
                buf.push_str(&line(&Reply::Note { level, text }));
            }
            let n = dropped.load(Ordering::Relaxed);
            if n != told {
                told = n;
                buf.push_str(&line(&Reply::Dropped { count: n }));
            }
            if !buf.is_empty() && send(&out, &buf).is_err() {
                return;
            }
        }
    }
}

/// Sends the first `delivered` events of the session, read by `wsdscope history` in a child
/// process, then `caught_up`. Errors only when the viewer has gone.
fn catch_up(out: &Mutex<Stream>, session: Option<&Path>, delivered: u64) -> std::io::Result<()> {
    if delivered == 0 {
        return send(out, &line(&Reply::CaughtUp { events: 0 }));
    }
    let note = |text: String| {
        let level = Level::Warn;
        send(out, &line(&Reply::Note { level, text }))
    };
    let Some(session) = session else {
        note(format!(
            "{delivered} earlier events are not shown: this run records no session file"
        ))?;
        return send(out, &line(&Reply::CaughtUp { events: 0 }));
    };
    let child = std::env::current_exe().and_then(|exe| {
        Process::new(exe)
            .arg("history")
            .arg(session)
            .arg("--until")
            .arg(delivered.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            note(format!("cannot read the earlier events: {e}"))?;
            return send(out, &line(&Reply::CaughtUp { events: 0 }));
        }
    };
    let mut lines = BufReader::new(child.stdout.take().expect("piped"));
    let mut sent = 0u64;
    let mut buf = String::new();
    loop {
        let n = lines.read_line(&mut buf).unwrap_or(0);
        if n > 0 && buf.ends_with('\n') {
            sent += 1;
        }
        if buf.len() >= 1 << 16 || n == 0 {
            if let Err(e) = send(out, &buf) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            buf.clear();
        }
        if n == 0 {
            break;
        }
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    if !ok || sent != delivered {
        let why = err.trim().trim_start_matches("error: ");
        note(format!(
            "only {sent} of the {delivered} earlier events could be read from {}{}",
            session.display(),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        ))?;
    }
    send(out, &line(&Reply::CaughtUp { events: sent }))
}
