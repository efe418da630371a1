//! A plugin that misbehaves on request, to prove the sandbox holds: the
//! template's `behaviour` field picks an endless loop, a memory bomb, a huge
//! output, a trap, an attempt to read a file or open a socket, a wait in the
//! host (a sleep, a poll on a clock), or a search of its memory for what an
//! earlier call left there. Anything else renders a normal message.
//!
//! Delivery misbehaves too: the template's `deliver` field (passed on in the
//! rendered message's extras, with `target`, the URL to send to) picks what
//! `build_request` does, and the provider's answer body picks what
//! `interpret_response` does.

use std::hint::black_box;
use std::time::Duration;

use nudge_plugin_sdk::{
    Channel, DeliveryOutcome, HttpRequest, HttpResponse, PluginInfo, RenderError, RenderRequest, Rendered, Value,
};

/// Longer than any test runs: a wait the host must cut short.
const FOREVER: Duration = Duration::from_secs(3600);

pub struct Hostile;

impl Channel for Hostile {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: "0.1.0".into(),
            channels: vec!["hostile".into()],
        }
    }

    fn render(request: &RenderRequest) -> Result<Rendered, RenderError> {
        let text = match request.field("behaviour").unwrap_or("ok") {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "huge" => "x".repeat(8 << 20),
            "flood" => {
                let mib: usize = request.field("mib").and_then(|m| m.parse().ok()).unwrap_or(8);
                "x".repeat(mib << 20)
            }
            "sleep" => {
                std::thread::sleep(FOREVER);
                "woke up".to_string()
            }
            "poll" => {
                wait_on_clock(FOREVER);
                "polled".to_string()
            }
            "trap" => panic!("hostile plugin panics on purpose"),
            "file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(content) => format!("read a file: {} bytes", content.len()),
                Err(e) => return Err(RenderError::general(format!("cannot open a file: {e}"))),
            },
            "socket" => {
                let target = request.field("target").unwrap_or("127.0.0.1:80");
                match std::net::TcpStream::connect(target) {
                    Ok(_) => format!("connected to {target}"),
                    Err(e) => return Err(RenderError::general(format!("cannot open a socket: {e}"))),
                }
            }
            "remember" => {
                // Leaves this call's secret in a static, on the heap and on the
                // stack, then looks through all of memory for the earlier call's
                // secret and for its own (which proves the search finds things).
                let secret = masked(request.field("secret").unwrap_or_default());
                let earlier = masked(request.field("earlier").unwrap_or_default());
                leave_behind(&secret);
                format!("earlier:{} own:{}", memory_holds(&earlier), memory_holds(&secret))
            }
            _ => "fine".to_string(),
        };
        let passed_on = ["deliver", "target"]
            .iter()
            .filter_map(|k| request.field(k).map(|v| (k.to_string(), v.to_string())))
            .collect();
        Ok(Rendered {
            text: Some(text),
            extra: passed_on,
            ..Rendered::default()
        })
    }

    fn build_request(message: &Rendered, _recipient: &str, _config: &Value) -> Result<Vec<HttpRequest>, RenderError> {
        let extra = |name: &str| message.extra.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let url = extra("target").unwrap_or("http://127.0.0.1:9/").to_string();
        let post = |body: Vec<u8>| HttpRequest {
            method: "POST".into(),
            url: url.clone(),
            headers: vec![("content-type".into(), "text/plain".into())],
            body,
        };
        Ok(match extra("deliver").unwrap_or("one") {
            "sleep" => {
                std::thread::sleep(FOREVER);
                vec![post(b"woke up".to_vec())]
            }
            "many" => (0..100).map(|i| post(format!("part {i}").into_bytes())).collect(),
            "big" => vec![post(vec![b'x'; 3 << 20])],
            "parts" => (1..=3).map(|i| post(format!("part {i}").into_bytes())).collect(),
            "crlf" => {
                let mut request = post(b"crlf".to_vec());
                request.headers.push(("x-note".into(), "ok\r\nx-injected: yes".into()));
                vec![request]
            }
            "host" => {
                let mut request = post(b"host".to_vec());
                request.headers.push(("Host".into(), "internal.example".into()));
                vec![request]
            }
            _ => vec![post(b"one".to_vec())],
        })
    }

    fn interpret_response(response: &HttpResponse) -> DeliveryOutcome {
        match String::from_utf8_lossy(&response.body).trim() {
            "sleep" => {
                std::thread::sleep(FOREVER);
                DeliveryOutcome::Sent("woke up".into())
            }
            "trap" => panic!("hostile plugin panics on reading the answer"),
            "long-reason" => DeliveryOutcome::RetryLater("r".repeat(4 << 20)),
            "retry" => DeliveryOutcome::RetryLater("try again".into()),
            _ => nudge_plugin_sdk::outcome_from_status(response.status),
        }
    }
}

/// Waits on a monotonic-clock pollable through `wasi:io/poll.poll` itself, as an
/// async runtime does (std's sleep may take another way).
fn wait_on_clock(duration: Duration) {
    #[cfg(target_arch = "wasm32")]
    {
        #[link(wasm_import_module = "wasi:clocks/monotonic-clock@0.2.0")]
        unsafe extern "C" {
            #[link_name = "subscribe-duration"]
            fn subscribe_duration(nanos: i64) -> i32;
        }
        #[link(wasm_import_module = "wasi:io/poll@0.2.0")]
        unsafe extern "C" {
            #[link_name = "poll"]
            fn poll(pollables: *const i32, len: usize, ready: *mut [usize; 2]);
        }
        let mut ready = [0usize; 2];
        // SAFETY: the signatures are the canonical ABI of these WASI 0.2.0 functions;
        // `ready` receives the (pointer, length) of the list the host allocates.
        unsafe {
            let pollable = subscribe_duration(duration.as_nanos() as i64);
            poll(&pollable, 1, &mut ready);
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    std::thread::sleep(duration);
}

/// A secret as it is kept in memory: changed, so that the request's own copy
/// of it (plain text) is never what a search finds.
fn masked(secret: &str) -> Vec<u8> {
    secret.bytes().map(|b| b ^ 0xa5).collect()
}

static mut LEFT_IN_STATIC: [u8; 64] = [0; 64];

fn leave_behind(secret: &[u8]) {
    let n = secret.len().min(64);
    // SAFETY: the plugin is single-threaded; nothing else touches the static.
    unsafe { std::ptr::copy_nonoverlapping(secret.as_ptr(), std::ptr::addr_of_mut!(LEFT_IN_STATIC).cast::<u8>(), n) };
    Box::leak(secret.to_vec().into_boxed_slice());
    let mut on_stack = [0u8; 64];
    on_stack[..n].copy_from_slice(&secret[..n]);
    black_box(&on_stack);
}

/// Whether `needle` is anywhere in linear memory but in `needle` itself.
fn memory_holds(needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return false;
    };
    let own = needle.as_ptr() as usize..needle.as_ptr() as usize + needle.len();
    let end = memory_bytes();
    // Reads go through raw addresses (the whole memory is addressable in wasm);
    // the first page is skipped so that no read is of address zero.
    let byte = |addr: usize| unsafe { std::ptr::read_volatile(addr as *const u8) };
    (1024..end.saturating_sub(needle.len())).any(|addr| {
        !own.contains(&addr) && byte(addr) == first && (1..needle.len()).all(|i| byte(addr + i) == needle[i])
    })
}

#[cfg(target_arch = "wasm32")]
fn memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65536
}

#[cfg(not(target_arch = "wasm32"))]
fn memory_bytes() -> usize {
    0
}

nudge_plugin_sdk::export_channel!(Hostile);
