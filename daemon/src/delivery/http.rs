//! Delivery over HTTP for channels whose plugins describe requests as data
//! (SMS providers, WeCom). The host, not the plugin, sends: only to hosts the
//! plugin's manifest (or the admin) allows, never to private or link-local
//! addresses unless the admin grants that plugin that host, never to the
//! daemon's own API, without following redirects, within a time limit and a
//! response size cap. `${secret:NAME}` placeholders are filled
//! from the environment here, only in the URL and headers (a body carries
//! contact data, which must not be able to ask for a secret) and only for names
//! the admin's config for that plugin mentions, so a plugin can neither read
//! nor exfiltrate other secrets.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::HttpConfig;
use crate::plugins::{OutboundRequest, Plugin};
use crate::store::Outcome;

/// A response as the plugin gets to read it.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// Sends one request a plugin described; Err is the outcome when it cannot be
/// sent. `daemon_api` is the daemon's own listener, never a destination.
pub(crate) async fn send(
    plugin: &Plugin,
    config: &HttpConfig,
    daemon_api: SocketAddr,
    request: OutboundRequest,
) -> Result<Response, Outcome> {
    let secrets = referenced_secrets(&plugin.config);
    let fill = |text: &str| fill_secrets(text, &secrets);
    let to = Destination::allowed(plugin, config, &fill(&request.url)?)?;
    let headers = checked_headers(&request.headers, &fill)?;
    let addr = to.checked_address(&plugin.manifest.id, daemon_api).await?;
    let client = reqwest::Client::builder()
        // A proxy would resolve the name itself, around the checked address.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(config.timeout_secs.max(1)))
        .resolve(&to.host, addr)
        .build()
        .map_err(|e| Outcome::Transient(format!("HTTP client: {e}")))?;
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| Outcome::Permanent(format!("bad HTTP method `{}`", request.method)))?;
    let host = &to.host;
    let response = client
        .request(method, to.url)
        .headers(headers)
        .body(request.body)
        .send()
        .await
        .map_err(|e| {
            // The URL may hold a filled-in secret: keep it out of logs and the deliveries table.
            let e = e.without_url();
            if e.is_timeout() && !e.is_connect() {
                // The request went out; the provider may have accepted it.
                Outcome::Unknown(format!(
                    "no answer from {host} in time; the provider may have the message"
                ))
            } else {
                Outcome::Transient(format!("request to {host}: {e}"))
            }
        })?;
    read_response(response, host, config.max_response_kb).await
}

/// Where a request goes: a URL whose host the plugin may reach.
struct Destination {
    url: reqwest::Url,
    host: String,
    port: u16,
    /// The admin granted this plugin this host although it may be private.
    private_granted: bool,
}

impl Destination {
    /// The URL (secrets filled in), if its scheme is HTTP and the plugin's
    /// manifest or the admin lists its host for the plugin.
    fn allowed(plugin: &Plugin, config: &HttpConfig, url: &str) -> Result<Destination, Outcome> {
        let url = reqwest::Url::parse(url).map_err(|e| Outcome::Permanent(format!("bad URL from plugin: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Outcome::Permanent(format!("scheme `{}` is not allowed", url.scheme())));
        }
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let id = &plugin.manifest.id;
        let listed = |hosts: Option<&Vec<String>>| {
            hosts
                .into_iter()
                .flatten()
                .any(|h| h.eq_ignore_ascii_case(&host) || h.eq_ignore_ascii_case(&format!("{host}:{port}")))
        };
        let private_granted = listed(config.private_hosts.get(id));
        let allowed = private_granted
            || listed(Some(&plugin.manifest.capabilities.http_hosts))
            || listed(config.allow_hosts.get(id));
        if !allowed {
            return Err(Outcome::Permanent(format!(
                "plugin {} may not reach {host}:{port}; list it in its manifest's http_hosts or in [http.allow_hosts] {} = [...]",
                plugin.manifest.id, plugin.manifest.id
            )));
        }
        Ok(Destination {
            url,
            host,
            port,
            private_granted,
        })
    }

    /// The address to connect to. Resolves once, checks every address, and
    /// connects only to the checked one, so DNS cannot point the request
    /// somewhere else between check and connect. An IP literal (`[::1]`
    /// included) is its own address, never a name to look up.
    async fn checked_address(&self, id: &str, daemon_api: SocketAddr) -> Result<SocketAddr, Outcome> {
        let (host, port) = (&self.host, self.port);
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Outcome::Transient(format!("resolve {host}: {e}")))?
                .collect(),
        };
        let Some(&addr) = addrs.first() else {
            return Err(Outcome::Transient(format!("{host} has no address")));
        };
        if let Some(own) = addrs.iter().find(|a| is_daemon_api(**a, daemon_api)) {
            return Err(Outcome::Permanent(format!(
                "{host}:{port} ({own}) is this daemon's own API ([api] bind = \"{daemon_api}\"); plugins may never send there"
            )));
        }
        if !self.private_granted
            && let Some(private) = addrs.iter().find(|a| !is_public(a.ip()))
        {
            return Err(Outcome::Permanent(format!(
                "{host} resolves to {}, a private address; refused (for an on-premise gateway, grant it to this plugin: \
                 [http] private_hosts = {{ {id} = [\"{host}:{port}\"] }})",
                private.ip()
            )));
        }
        Ok(addr)
    }
}

/// The answer as the plugin gets to read it: no redirect followed, the body
/// refused while reading once it passes `max_kb`.
async fn read_response(mut response: reqwest::Response, host: &str, max_kb: u64) -> Result<Response, Outcome> {
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("?")
            .to_string();
        return Err(Outcome::Permanent(format!(
            "{host} redirects to {to}; redirects are not followed"
        )));
    }
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let cap = max_kb as usize * 1024;
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Outcome::Transient(format!("read from {host}: {}", e.without_url())))?
    {
        if body.len() + chunk.len() > cap {
            return Err(Outcome::Permanent(format!("{host} answered more than {max_kb} KiB")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status: status.as_u16(),
        headers,
        body,
    })
}

/// Headers the host sets itself: a plugin setting them could send the request to
/// another virtual host or desynchronise the body from its framing.
const HOST_SET_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// A plugin's headers, secrets filled in, as HTTP allows them; a bad one is a
/// final error naming it (its value may hold a secret, so it is not shown).
fn checked_headers(
    headers: &[(String, String)],
    fill: &impl Fn(&str) -> Result<String, Outcome>,
) -> Result<reqwest::header::HeaderMap, Outcome> {
    let mut checked = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        if HOST_SET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return Err(Outcome::Permanent(format!(
                "the plugin may not set the `{name}` header; the host sets it"
            )));
        }
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            Outcome::Permanent(format!(
                "the plugin's header name `{}` is not valid HTTP",
                name.escape_debug()
            ))
        })?;
        let value = fill(value)?;
        if value.contains(['\r', '\n']) {
            return Err(Outcome::Permanent(format!(
                "the plugin's header `{name}` contains CR or LF, which would start another header; refused"
            )));
        }
        let value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
            Outcome::Permanent(format!("the plugin's header `{name}` has a control character; refused"))
        })?;
        checked.append(header, value);
    }
    Ok(checked)
}

/// Names of the secrets the admin's config for a plugin refers to.
fn referenced_secrets(config: &serde_json::Value) -> BTreeSet<String> {
    let text = config.to_string();
    text.split("${secret:")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect()
}

/// Replaces `${secret:NAME}` with the environment variable NAME, for allowed names only.
fn fill_secrets(text: &str, allowed: &BTreeSet<String>) -> Result<String, Outcome> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${secret:") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "${secret:".len()..];
        let Some((name, tail)) = after.split_once('}') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        if !allowed.contains(name) {
            return Err(Outcome::Permanent(format!(
                "the plugin refers to secret {name}, which its config does not name"
            )));
        }
        let value = std::env::var(name)
            .map_err(|_| Outcome::Permanent(format!("secret {name} is not set in the daemon's environment")))?;
        out.push_str(&value);
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `addr` reaches the daemon's API listening on `api`: its port, on the
/// address it listens on, on loopback, or on any address when it listens on all.
fn is_daemon_api(addr: SocketAddr, api: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    addr.port() == api.port()
        && (api.ip().is_unspecified() || ip.is_loopback() || ip.is_unspecified() || ip == api.ip().to_canonical())
}

/// False for loopback, private, link-local, unspecified, shared and unique-local addresses.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv4 inside IPv6 (mapped, compatible, NAT64, 6to4) is judged as that IPv4 address.
            let embedded = |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::from(((hi as u32) << 16) | lo as u32));
            match s {
                [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo]
                    if !v6.is_loopback() && !v6.is_unspecified() =>
                {
                    is_public(embedded(hi, lo))
                }
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public(embedded(hi, lo)),
                [0x2002, hi, lo, ..] => is_public(embedded(hi, lo)),
                _ => {
                    !(v6.is_loopback()
                        || v6.is_unspecified()
                        || v6.is_multicast()
                        || (s[0] & 0xfe00) == 0xfc00
                        || (s[0] & 0xffc0) == 0xfe80
                        || (s[0] & 0xffc0) == 0xfec0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fec0::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn only_secrets_the_config_names_are_filled() {
        let allowed = referenced_secrets(&serde_json::json!({"key": "${secret:NUDGE_TEST_SECRET_A}"}));
        // SAFETY: no other code reads or writes this variable, whose name is unique to this test.
        unsafe { std::env::set_var("NUDGE_TEST_SECRET_A", "s3cret") };
        assert_eq!(
            fill_secrets("k=${secret:NUDGE_TEST_SECRET_A}&x", &allowed).unwrap(),
            "k=s3cret&x"
        );
        assert!(matches!(
            fill_secrets("${secret:HOME}", &allowed),
            Err(Outcome::Permanent(_))
        ));
        assert_eq!(fill_secrets("no placeholders", &allowed).unwrap(), "no placeholders");
    }
}
