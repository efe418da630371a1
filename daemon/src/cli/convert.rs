//! From the parsed arguments to the domain's inputs, handed to `commands`.

use super::args::{
    ContactArgs, ContactCommand, FollowUpCommand, OrderCommand, OutboxCommand, ReportFormatArg, RunsCommand, RunsList,
    SuppressCommand,
};
use crate::app::{Amount, FollowUpInput, NewOrder, NewSuppression, RunQuery};
use crate::commands;
use crate::commands::report::ReportFormat;
use crate::commands::suppress::SuppressAction;
use crate::config::Config;
use crate::store::{ContactEdit, NewContact};

impl From<ReportFormatArg> for ReportFormat {
    fn from(format: ReportFormatArg) -> ReportFormat {
        match format {
            ReportFormatArg::Table => ReportFormat::Table,
            ReportFormatArg::Json => ReportFormat::Json,
            ReportFormatArg::Csv => ReportFormat::Csv,
        }
    }
}

impl ContactCommand {
    pub(super) async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            ContactCommand::Add(args) => commands::contact::add(config, (*args).into()).await,
            ContactCommand::Import { file, strict } => commands::contact::import(config, &file, strict).await,
            ContactCommand::Show { contact, json } => commands::contact::show(config, &contact, json).await,
            ContactCommand::Edit {
                contact,
                salutation,
                locale,
            } => commands::contact::edit(config, &contact, ContactEdit { salutation, locale }).await,
        }
    }
}

impl From<ContactArgs> for NewContact {
    fn from(a: ContactArgs) -> NewContact {
        NewContact {
            name: a.name,
            salutation: a.salutation,
            company: a.company,
            email: a.email,
            phone: a.phone,
            owner: a.owner,
            stage: a.stage,
            intent_grade: a.intent,
            value_tier: a.tier,
            tags: a.tags,
            source: a.source,
            time_zone: a.tz,
            locale: a.locale,
            consent: a.consent,
        }
    }
}

impl FollowUpCommand {
    pub(super) async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            FollowUpCommand::Log(a) => {
                let input = FollowUpInput {
                    at: a.at,
                    channel: a.channel,
                    summary: a.summary,
                    feedback: a.feedback,
                    intent_grade: a.intent,
                    attitude: a.attitude,
                    understanding: a.understanding,
                    stage: a.stage,
                    next_follow_up: a.next,
                    next_goal: a.goal,
                    result: a.result,
                    owner: a.owner,
                };
                commands::follow_up::log(config, &a.contact, input).await
            }
            FollowUpCommand::Import { file, strict } => commands::follow_up::import(config, &file, strict).await,
        }
    }
}

impl OrderCommand {
    pub(super) async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            OrderCommand::Add {
                id,
                contact,
                amount,
                currency,
                date,
                items,
            } => {
                let order = NewOrder {
                    id,
                    contact,
                    amount: Amount::Text(amount),
                    currency,
                    date,
                    items,
                };
                commands::order::add(config, order).await
            }
            OrderCommand::Import { file, strict, history } => {
                commands::order::import(config, &file, strict, history).await
            }
        }
    }
}

impl OutboxCommand {
    pub(super) async fn run(self, config: &Config) -> anyhow::Result<()> {
        match self {
            OutboxCommand::List { status, limit, json } => commands::outbox::list(config, &status, limit, json).await,
            OutboxCommand::Retry { ids, all } => commands::outbox::act(config, true, &ids, all).await,
            OutboxCommand::Drop { ids, all } => commands::outbox::act(config, false, &ids, all).await,
        }
    }
}

impl SuppressCommand {
    pub(super) async fn run(self, config: &Config) -> anyhow::Result<()> {
        let action = match &self {
            SuppressCommand::Add {
                address,
                channel,
                scope,
                detail,
            } => SuppressAction::Add(NewSuppression {
                address: address.clone(),
                channel: channel.clone(),
                scope: *scope,
                detail: detail.clone(),
            }),
            SuppressCommand::Remove { address, channel } => SuppressAction::Remove { address, channel },
            SuppressCommand::List { json } => SuppressAction::List { as_json: *json },
        };
        commands::suppress::run(config, action).await
    }
}

impl From<RunsList> for RunQuery {
    fn from(a: RunsList) -> RunQuery {
        RunQuery {
            contact: a.contact,
            workflow: a.workflow,
            status: a.status,
            since: a.since,
            before: a.before,
            limit: a.limit,
        }
    }
}

impl RunsCommand {
    pub(super) async fn run(command: Option<RunsCommand>, list: RunsList, config: &Config) -> anyhow::Result<()> {
        match command {
            Some(RunsCommand::Show { id, json }) => commands::runs::show(config, id, json).await,
            None => {
                let json = list.json;
                commands::runs::list(config, list.into(), json).await
            }
        }
    }
}
