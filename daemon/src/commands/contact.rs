//! `nudge contact add|edit|import|show`.

use std::path::Path;

use crate::app::{self, ContactCard};
use crate::clock::display_ms;
use crate::config::Config;
use crate::daemon;
use crate::import;
use crate::model::money;
use crate::store::{Contact, ContactEdit, NewContact};

/// Follow-ups and orders `show` prints, newest first.
const LATEST_SHOWN: i64 = 10;

/// `nudge contact add`: one contact.
pub(crate) async fn add(config: &Config, new: NewContact) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let id = app::add_contact(&mut tx, &new, clock.now_ms()).await?;
    tx.commit().await?;
    println!("contact {id} added");
    Ok(())
}

/// `nudge contact edit`: how a contact is addressed, its locale.
pub(crate) async fn edit(config: &Config, reference: &str, edit: ContactEdit) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut tx = store.write().await?;
    let id = app::edit_contact(&mut tx, reference, &edit, "cli", clock.now_ms()).await?;
    tx.commit().await?;
    println!("contact {id} changed");
    Ok(())
}

/// `nudge contact import`: a CSV of contacts.
pub(crate) async fn import(config: &Config, file: &Path, strict: bool) -> anyhow::Result<()> {
    let (store, clock) = daemon::open(config).await?;
    let mut contacts = import::contacts::Contacts { now: clock.now_ms() };
    let summary = import::import_csv(&store, file, strict, &mut contacts).await?;
    println!(
        "imported {} contacts, {} already present, {} bad rows skipped",
        summary.added, summary.already_present, summary.bad
    );
    Ok(())
}

/// `nudge contact show`: the contact, its classification, latest orders, the
/// history of its fields and its latest follow-ups.
pub(crate) async fn show(config: &Config, reference: &str, as_json: bool) -> anyhow::Result<()> {
    let (store, _) = daemon::open(config).await?;
    let mut conn = store.pool.acquire().await?;
    let card = app::contact_card(&mut conn, reference, LATEST_SHOWN).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&card)?);
    } else {
        print_contact(&card.contact);
        print_activity(&card);
    }
    Ok(())
}

fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("-")
}

fn print_contact(contact: &Contact) {
    let company = if contact.company.is_empty() {
        "-"
    } else {
        &contact.company
    };
    println!("#{} {} ({company})", contact.id, contact.name);
    println!(
        "  email {}  phone {}  owner {}",
        opt(&contact.email),
        opt(&contact.phone),
        contact.owner
    );
    println!(
        "  stage {}  intent {}  tier {}  tags [{}]  source {}",
        contact.stage,
        opt(&contact.intent_grade),
        opt(&contact.value_tier),
        contact.tags.0.join(", "),
        contact.source
    );
    if let Some(funnel) = &contact.funnel_stage {
        println!(
            "  funnel {funnel} ({}, {})",
            opt(&contact.attitude),
            opt(&contact.understanding)
        );
    }
    println!(
        "  time zone {}  locale {}  consent {}",
        contact.time_zone, contact.locale, contact.consent
    );
    if !contact.salutation.is_empty() {
        println!("  addressed as {}", contact.salutation);
    }
    if let Some(since) = &contact.customer_since {
        println!(
            "  customer since {since}  rfm {} ({})  behaviour {}",
            opt(&contact.rfm_grade),
            opt(&contact.rfm_scores),
            opt(&contact.behaviour)
        );
    }
    match contact.next_follow_up_at {
        Some(at) => println!("  next follow-up {} ({})", display_ms(at), opt(&contact.next_goal)),
        None => println!("  next follow-up: none"),
    }
}

/// The latest orders, the history and the latest follow-ups.
fn print_activity(card: &ContactCard) {
    if !card.orders.is_empty() {
        println!("  latest orders:");
    }
    for o in &card.orders {
        println!(
            "  - {} {} {} {}{}",
            o.ordered_on,
            o.external_id,
            money::format_minor(o.amount_minor),
            o.currency,
            if o.items.is_empty() {
                String::new()
            } else {
                format!("  {}", o.items)
            }
        );
    }
    if !card.history.is_empty() {
        println!("  history:");
    }
    for h in &card.history {
        println!(
            "  - {} {} {} -> {} by {}",
            display_ms(h.at),
            h.field,
            h.from_value.as_deref().unwrap_or("-"),
            h.to_value.as_deref().unwrap_or("-"),
            h.changed_by
        );
    }
    if !card.follow_ups.is_empty() {
        println!("  latest follow-ups:");
    }
    for f in &card.follow_ups {
        println!(
            "  - {} {} [{}] {}{}",
            display_ms(f.at),
            f.channel,
            f.result,
            f.summary,
            f.status_change.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
        );
    }
}
