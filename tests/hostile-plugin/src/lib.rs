//! A plugin that misbehaves on request, to prove the sandbox holds: the
//! template's `behaviour` field picks an endless loop, a memory bomb, a huge
//! output, a trap, an attempt to read a file or open a socket, or a search of
//! its memory for what an earlier call left there. Anything else renders a
//! normal message.

use std::hint::black_box;

use nudge_plugin_sdk::{Channel, PluginInfo, RenderError, RenderRequest, Rendered};

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
        Ok(Rendered {
            text: Some(text),
            ..Rendered::default()
        })
    }
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
