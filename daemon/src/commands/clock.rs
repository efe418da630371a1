//! `nudge clock`: shows or moves the virtual clock, which the daemon follows.

use anyhow::bail;

use crate::clock::{display_ms, parse_time};
use crate::config::{ClockKind, Config};
use crate::daemon;
use crate::model::{add_span, parse_duration};

/// `nudge clock`: shows or moves the virtual clock.
pub(crate) async fn run(config: &Config, set: Option<&str>, advance: Option<&str>) -> anyhow::Result<()> {
    if config.clock != ClockKind::Virtual {
        bail!("this config runs on the system clock; set `clock = \"virtual\"` in nudge.toml to move time by hand");
    }
    let (store, clock) = daemon::open(config).await?;
    let now = clock.now_ms();
    let target = match (set, advance) {
        (Some(t), _) => parse_time(t, now, "UTC").map_err(anyhow::Error::msg)?,
        (None, Some(d)) => {
            let span = parse_duration(d).map_err(anyhow::Error::msg)?;
            add_span(now, span, "UTC")
        }
        (None, None) => now,
    };
    if target < now {
        eprintln!(
            "warning: moving the virtual clock back from {}; timers already fired stay fired",
            display_ms(now)
        );
    }
    store.set_virtual_now(target).await?;
    println!("virtual clock: {}", display_ms(target));
    Ok(())
}
