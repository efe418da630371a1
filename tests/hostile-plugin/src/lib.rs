//! A plugin that misbehaves on request, to prove the sandbox holds: the
//! template's `behaviour` field picks an endless loop, a memory bomb, a huge
//! output, a trap, or an attempt to read a file or open a socket. Anything
//! else renders a normal message.

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
            _ => "fine".to_string(),
        };
        Ok(Rendered {
            text: Some(text),
            ..Rendered::default()
        })
    }
}

nudge_plugin_sdk::export_channel!(Hostile);
