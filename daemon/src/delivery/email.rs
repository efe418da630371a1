//! Email delivery: sends the message built from an outbox row (`build.rs`),
//! signed, over SMTP, or writes it as an `.eml` file when no SMTP server is configured (the
//! out-of-the-box default).
//!
//! The SMTP exchange is driven command by command (lettre's connection API) over
//! our own small pool, because the outcome depends on where a failure happens:
//! anything before the message body is sent can be retried safely, while a
//! timeout or dropped connection after the body went out leaves the outcome
//! unknown: the server may have queued the message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::message::dkim::DkimConfig;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::bounces::ReturnPath;
use crate::config::{Config, SmtpConfig, SmtpTls};
use crate::store::{OutboxRow, Outcome};

/// The most SMTP sessions kept open (`delivery.concurrency` is capped at it).
/// Each exchange takes round trips, so throughput comes from parallel sessions.
pub(crate) const POOL_SIZE: usize = 128;
/// The most sessions being opened at once. A burst after a quiet spell does
/// not open a session for each of its messages: while a few are opened, the
/// others go over sessions as they free up, a message taking two round trips
/// where opening a session takes four and more (connect, greeting, EHLO twice,
/// TLS). Opened sessions stay, so the pool still grows to what the load needs.
const MAX_OPENING: usize = 8;
/// An idle session older than this is closed rather than reused: servers drop idle clients.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

enum Route {
    Smtp(Box<Smtp>),
    EmlDir(PathBuf),
}

/// Sends email the way the config says.
pub(crate) struct Mailer {
    from: Mailbox,
    route: Route,
    /// The From domain's DKIM key, if it has one.
    dkim: Option<DkimConfig>,
    /// The envelope sender that names each message, when bounces come back as mail.
    return_path: Option<ReturnPath>,
}

impl Mailer {
    pub(crate) fn new(config: &Config, return_path: Option<ReturnPath>) -> anyhow::Result<Mailer> {
        let from: Mailbox = config
            .email
            .from
            .parse()
            .with_context(|| format!("email.from `{}` is not a mailbox", config.email.from))?;
        let route = match &config.smtp {
            None => Route::EmlDir(config.outbox_dir.clone()),
            Some(smtp) => Route::Smtp(Box::new(Smtp::new(config, smtp)?)),
        };
        // A configured key that cannot be used stops the start: never unsigned mail for that domain.
        let domain = from.email.domain().to_ascii_lowercase();
        let dkim = config.dkim_signers()?.remove(&domain);
        match &dkim {
            Some(_) => tracing::info!("DKIM: mail from {domain} is signed"),
            None => tracing::info!("DKIM: mail from {domain} goes unsigned (no [email.dkim.\"{domain}\"])"),
        }
        Ok(Mailer {
            from,
            route,
            dkim,
            return_path,
        })
    }

    /// Builds and sends one message; never panics on bad data, which becomes a
    /// permanent failure. Err: the relay refused the session itself (see
    /// `relay.rs`), which says nothing about this message.
    pub(crate) async fn send(&self, row: &OutboxRow, now_ms: i64) -> Result<Outcome, String> {
        let mut message = match super::build::build(&self.from, row, now_ms) {
            Ok(m) => m,
            Err(e) => return Ok(Outcome::Permanent(format!("cannot build message: {e:#}"))),
        };
        // Last, over the bytes as sent: each attempt rebuilds them (its own Date) and signs again.
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        match &self.route {
            Route::EmlDir(dir) => Ok(match write_eml(dir, row, &message.formatted()).await {
                Ok(()) => Outcome::Sent,
                Err(e) => Outcome::Transient(format!("write .eml: {e:#}")),
            }),
            Route::Smtp(smtp) => match self.envelope(row.id, message.envelope()) {
                Ok(envelope) => smtp.send(&envelope, &message.formatted()).await,
                Err(e) => Ok(Outcome::Permanent(format!("cannot build the envelope: {e}"))),
            },
        }
    }

    /// The message's envelope, with the return path that names it when bounces
    /// come back as mail: the From address is left as the recipient sees it.
    fn envelope(&self, outbox_id: i64, built: &Envelope) -> Result<Envelope, String> {
        let sender = match &self.return_path {
            Some(return_path) => {
                let address = return_path.address(outbox_id);
                Some(address.parse().map_err(|e| format!("return path {address}: {e}"))?)
            }
            None => built.from().cloned(),
        };
        Envelope::new(sender, built.to().to_vec()).map_err(|e| e.to_string())
    }

    /// Opens one session without a message, to see whether the relay accepts
    /// sessions again; the session then serves the next send. None without a relay.
    pub(super) fn probe(&self) -> Option<impl Future<Output = Result<(), String>> + Send + 'static> {
        let Route::Smtp(smtp) = &self.route else {
            return None;
        };
        let (server, pool) = (smtp.server.clone(), smtp.pool.clone());
        Some(async move {
            match timeout_at(Instant::now() + server.deadline, server.connect()).await {
                Ok(Ok(session)) => {
                    pool.put_idle(session);
                    Ok(())
                }
                Ok(Err(e)) => Err(server.refusal(e)),
                Err(_) => Err(server.refusal(Failure::TimedOut)),
            }
        })
    }
}

/// An SMTP server and the sessions open to it.
struct Smtp {
    server: Arc<Server>,
    pool: Arc<Pool>,
}

/// What opening a session to the server takes.
struct Server {
    host: String,
    port: u16,
    tls: SmtpTls,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// The whole exchange for one message, connect to the answer after the body.
    deadline: Duration,
}

/// The sessions to one server: those idle, and how many are being opened.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<(Instant, Session)>>,
    opening: AtomicUsize,
    /// Told when a session goes idle or an opening ends: a send waiting for a
    /// session takes the idle one or opens one of its own.
    changed: Notify,
}

/// An open SMTP session.
struct Session {
    conn: AsyncSmtpConnection,
    /// The server takes the envelope and DATA in one go (RFC 2920 PIPELINING):
    /// two round trips a message instead of three plus one per recipient.
    pipelining: bool,
}

enum Failure {
    Smtp(lettre::transport::smtp::Error),
    /// The TCP connection could not be opened.
    Connect(std::io::Error),
    TimedOut,
}

/// How far an exchange got when it failed.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Envelope,
    Recipient,
    Body,
}

/// A session being opened, counted in its pool until it is open or has failed.
struct Opening(Arc<Pool>);

impl Opening {
    fn start(pool: Arc<Pool>) -> Opening {
        pool.opening.fetch_add(1, Ordering::SeqCst);
        Opening(pool)
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::SeqCst);
        // A send waiting for a session may now open one.
        self.0.changed.notify_one();
    }
}

impl Pool {
    fn take_idle(&self) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap();
        while let Some((since, session)) = idle.pop() {
            if since.elapsed() < IDLE_LIMIT && !session.conn.has_broken() {
                return Some(session);
            }
        }
        None
    }

    fn put_idle(&self, session: Session) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < POOL_SIZE {
            idle.push((Instant::now(), session));
        }
        drop(idle);
        self.changed.notify_one();
    }
}

impl Server {
    /// Why a session could not be opened, as the relay's state shows it.
    fn refusal(&self, failure: Failure) -> String {
        match failure {
            Failure::Smtp(e) => e.to_string(),
            Failure::Connect(e) => format!("connect: {e}"),
            Failure::TimedOut => format!("no session within {:?}", self.deadline),
        }
    }

    async fn connect(&self) -> Result<Session, Failure> {
        let mut conn = match self.tls {
            SmtpTls::Tls => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.deadline),
                &self.hello,
                Some(TlsParameters::new(self.host.clone()).map_err(Failure::Smtp)?),
                None,
            )
            .await
            .map_err(Failure::Smtp)?,
            SmtpTls::None | SmtpTls::Starttls => {
                let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(Failure::Connect)?;
                // lettre writes a message's final "\r\n.\r\n" on its own after the body; under
                // Nagle's algorithm it then waits for the server's delayed ACK, ~40 ms a message.
                // (lettre opens implicit-TLS sessions itself, without this.)
                stream.set_nodelay(true).map_err(Failure::Connect)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                    .await
                    .map_err(Failure::Smtp)?
            }
        };
        if self.tls == SmtpTls::Starttls {
            conn.starttls(
                TlsParameters::new(self.host.clone()).map_err(Failure::Smtp)?,
                &self.hello,
            )
            .await
            .map_err(Failure::Smtp)?;
        }
        // lettre keeps only the extensions it uses from its EHLO, and PIPELINING is
        // not one of them: ask once more (RFC 5321 allows it) and read the keywords.
        let extensions = conn
            .command(Ehlo::new(self.hello.clone()))
            .await
            .map_err(Failure::Smtp)?;
        let pipelining = extensions.message().skip(1).any(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|keyword| keyword.eq_ignore_ascii_case("PIPELINING"))
        });
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(Failure::Smtp)?;
        }
        Ok(Session { conn, pipelining })
    }
}

impl Smtp {
    fn new(config: &Config, smtp: &SmtpConfig) -> anyhow::Result<Smtp> {
        let credentials = match &smtp.username {
            Some(user) => {
                let password = config
                    .smtp_password()
                    .with_context(|| format!("smtp.username is set but ${} holds no password", smtp.password_env))?;
                Some(Credentials::new(user.clone(), password))
            }
            None => None,
        };
        let server = Server {
            host: smtp.host.clone(),
            port: smtp.port,
            tls: smtp.tls,
            credentials,
            hello: ClientId::default(),
            deadline: Duration::from_secs(smtp.timeout_secs.max(1)),
        };
        Ok(Smtp {
            server: Arc::new(server),
            pool: Arc::default(),
        })
    }

    /// One message over one session (`session`). A reused session the server
    /// has meanwhile closed fails at MAIL with no reply code; then the message
    /// goes once more over a session opened for it.
    /// A session that cannot be opened is the relay's refusal (Err), not the message's.
    async fn send(&self, envelope: &Envelope, body: &[u8]) -> Result<Outcome, String> {
        let deadline = Instant::now() + self.server.deadline;
        let (session, reused) = self.session(deadline).await.map_err(|e| self.server.refusal(e))?;
        let result = self.exchange(session, envelope, body, deadline).await;
        match result {
            Err((Phase::Envelope, Failure::Smtp(ref e))) if reused && e.status().is_none() => {}
            result => return Ok(self.outcome(result)),
        }
        let session = self.open(deadline).await.map_err(|e| self.server.refusal(e))?;
        let result = self.exchange(session, envelope, body, deadline).await;
        Ok(self.outcome(result))
    }

    /// A session for one message, and whether it was used before: an idle one
    /// if there is one, else whichever comes first of a session another send
    /// frees and one this send opens (if fewer than MAX_OPENING are being
    /// opened). A session opened for a send that got a freed one first goes
    /// to the pool when it is ready.
    async fn session(&self, deadline: Instant) -> Result<(Session, bool), Failure> {
        let mut opening = None;
        loop {
            let changed = self.pool.changed.notified();
            tokio::pin!(changed);
            // Waiting from here: a session freed after the look below wakes this send.
            changed.as_mut().enable();
            if let Some(session) = self.pool.take_idle() {
                if let Some(opening) = opening {
                    let pool = self.pool.clone();
                    tokio::spawn(async move {
                        if let Ok(session) = opening.await {
                            pool.put_idle(session);
                        }
                    });
                }
                return Ok((session, true));
            }
            if opening.is_none() && self.pool.opening.load(Ordering::SeqCst) < MAX_OPENING {
                opening = Some(Box::pin(self.open(deadline)));
            }
            tokio::select! {
                opened = async { opening.as_mut().expect("polled only while opening").await }, if opening.is_some() => {
                    return opened.map(|session| (session, false));
                }
                _ = &mut changed => {}
                _ = sleep_until(deadline) => return Err(Failure::TimedOut),
            }
        }
    }

    /// Opens a session within `deadline`, counted in the pool's `opening`
    /// from now until it is open or has failed.
    fn open(&self, deadline: Instant) -> impl Future<Output = Result<Session, Failure>> + Send + 'static {
        let opening = Opening::start(self.pool.clone());
        let server = self.server.clone();
        async move {
            let opened = timeout_at(deadline, server.connect()).await;
            drop(opening);
            opened.unwrap_or(Err(Failure::TimedOut))
        }
    }

    /// The envelope, DATA, then the body. With PIPELINING the envelope and DATA
    /// go out in one write and their replies are read in order; either way the
    /// first refusal ends the exchange before any of the body is sent.
    async fn exchange(
        &self,
        mut session: Session,
        envelope: &Envelope,
        body: &[u8],
        deadline: Instant,
    ) -> Result<(), (Phase, Failure)> {
        let conn = &mut session.conn;
        let mut options = Vec::new();
        if !body.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let non_ascii = |a: &lettre::Address| !AsRef::<str>::as_ref(a).is_ascii();
        if envelope.from().is_some_and(non_ascii) || envelope.to().iter().any(non_ascii) {
            options.push(MailParameter::SmtpUtfEight);
        }
        let mut commands = vec![(
            Phase::Envelope,
            Mail::new(envelope.from().cloned(), options).to_string(),
        )];
        for to in envelope.to() {
            commands.push((Phase::Recipient, Rcpt::new(to.clone(), vec![]).to_string()));
        }
        commands.push((Phase::Recipient, Data.to_string()));
        // Pipelined, every command is written with the first and then each reply is read.
        let mut unsent = session
            .pipelining
            .then(|| commands.iter().map(|(_, command)| command.as_str()).collect::<String>());
        for (phase, command) in commands {
            let reply = if !session.pipelining {
                timeout_at(deadline, conn.command(command)).await
            } else if let Some(all) = unsent.take() {
                timeout_at(deadline, conn.command(all)).await
            } else {
                timeout_at(deadline, conn.read_response()).await
            };
            match reply {
                Ok(Ok(_)) => {}
                // The server answered: say goodbye, within the deadline (a reply still
                // due to a pipelined command may be what it reads). The session is not reused.
                Ok(Err(e)) => {
                    let _ = timeout_at(deadline, conn.abort()).await;
                    return Err((phase, Failure::Smtp(e)));
                }
                // No answer: a goodbye would wait for one too.
                Err(_) => return Err((phase, Failure::TimedOut)),
            }
        }
        match timeout_at(deadline, conn.message(body)).await {
            Ok(Ok(_)) => {
                self.pool.put_idle(session);
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = timeout_at(deadline, conn.abort()).await;
                Err((Phase::Body, Failure::Smtp(e)))
            }
            Err(_) => Err((Phase::Body, Failure::TimedOut)),
        }
    }

    /// Classifies a finished exchange (RFC 5321 §4.2.1: 4xx transient, 5xx permanent).
    fn outcome(&self, result: Result<(), (Phase, Failure)>) -> Outcome {
        let (phase, error) = match result {
            Ok(()) => return Outcome::Sent,
            Err((phase, Failure::Smtp(error))) => (phase, error),
            Err((Phase::Body, Failure::TimedOut)) => {
                return Outcome::Unknown(format!(
                    "no reply within {:?} after the message body; the server may have it",
                    self.server.deadline
                ));
            }
            Err((_, Failure::TimedOut)) => {
                return Outcome::Transient(format!(
                    "no reply within {:?} (before the message body)",
                    self.server.deadline
                ));
            }
            Err((_, Failure::Connect(error))) => return Outcome::Transient(format!("connect: {error}")),
        };
        let code = error.status().map(|c| c.to_string());
        match (phase, code) {
            (Phase::Recipient, Some(_)) if error.is_permanent() => Outcome::Bounced(error.to_string()),
            (Phase::Recipient, Some(_)) if error.is_transient() => Outcome::SoftBounced(error.to_string()),
            (_, Some(_)) if error.is_permanent() => Outcome::Permanent(error.to_string()),
            (_, Some(_)) => Outcome::Transient(error.to_string()),
            // The body went out and no reply came: the server may have the message.
            (Phase::Body, None) => Outcome::Unknown(format!("no reply after the message body: {error}")),
            (_, None) => Outcome::Transient(error.to_string()),
        }
    }
}

/// Writes atomically (temp file + rename), so a reader never sees half a message.
async fn write_eml(dir: &std::path::Path, row: &OutboxRow, bytes: &[u8]) -> anyhow::Result<()> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("create {}", dir.display()))?;
    let name = format!("{:08}-{}.eml", row.id, row.idempotency_key);
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, dir.join(&name)).await?;
    Ok(())
}
