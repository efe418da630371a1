//! `when` conditions: CEL expressions over the contact and the triggering event.
//!
//! The `cel` crate has no type checker, so a condition is checked at load in two
//! passes: every `contact.x` / `event.x` must name a known field, and the
//! expression is evaluated against a probe contact whose fields all hold values
//! of their real types, which surfaces type errors such as comparing a string
//! with a number, and a result that is not a bool.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use cel::common::ast::{Expr, IdedExpr};
use cel::{Context, Env, Program, Value};
use serde_json::json;

/// The fields a condition can read, with a sample value of each field's type.
pub fn contact_schema() -> serde_json::Value {
    json!({
        "id": 1, "name": "probe", "salutation": "", "company": "probe", "email": "probe@example.com", "phone": "",
        "owner": "owner@example.com", "stage": "lead", "intent_grade": "A", "value_tier": "high",
        "tags": ["probe"], "source": "ads", "time_zone": "UTC", "locale": "en", "consent": "granted",
        "follow_up_count": 0, "has_next_follow_up": false, "rfm_grade": "A", "behaviour": "active",
        "funnel_stage": "opportunity", "order_count": 0,
    })
}

/// The event fields a condition can read (absent ones are empty strings / zero).
pub fn event_schema() -> serde_json::Value {
    json!({ "kind": "stage_changed", "from": "lead", "to": "inquiry", "inquiry_id": 0 })
}

/// The part of a condition that was false, and the values it read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Falsity {
    /// The source text of that part.
    pub(crate) part: String,
    /// `contact.x` / `event.x` -> the value seen.
    pub(crate) values: BTreeMap<String, serde_json::Value>,
}

/// A compiled condition.
pub struct Condition {
    pub(crate) source: String,
    program: Program,
    env: Arc<Env>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

/// A problem in a condition, at a byte range of the expression.
#[derive(Debug)]
pub struct ConditionError {
    pub(crate) span: Range<usize>,
    pub(crate) message: String,
    pub(crate) help: Option<String>,
}

impl Condition {
    pub fn compile(source: &str) -> Result<Condition, ConditionError> {
        let env = Arc::new(Env::stdlib());
        let program = env.compile(source).map_err(|errors| {
            let first = errors.errors.into_iter().next();
            let (span, message) = match first {
                Some(e) => (offset_of(source, e.pos.0, e.pos.1), e.msg),
                None => (0..0, "could not parse".to_string()),
            };
            // The parser wraps some errors in a debug dump of another error: show its message alone.
            let message = match message.split_once("msg: \"").and_then(|(_, rest)| rest.split_once('"')) {
                Some((inner, _)) => inner.to_string(),
                None => message,
            };
            if let Some(limit) = message
                .strip_prefix("Recursion limit of ")
                .and_then(|m| m.strip_suffix(" exceeded"))
            {
                return ConditionError {
                    span,
                    message: format!("the expression is nested too deeply (more than {limit} levels)"),
                    help: Some(
                        "write it flatter: fewer parentheses, or conditions joined with `&&` / `||` side by side"
                            .into(),
                    ),
                };
            }
            ConditionError {
                span: span.clone(),
                message: format!("CEL syntax error: {message}"),
                help: Some(
                    "conditions are CEL, e.g. `contact.intent_grade == \"A\" && \"vip\" in contact.tags`".into(),
                ),
            }
        })?;
        let condition = Condition {
            source: source.to_string(),
            program,
            env,
        };
        condition.check_fields()?;
        match condition.evaluate(&contact_schema(), &event_schema()) {
            Ok(_) => Ok(condition),
            Err(message) => Err(type_error(0..source.len(), message)),
        }
    }

    /// A type error in an operand of `&&` / `||` that `compile`'s probe did not
    /// reach: they stop at the first operand that decides. Checked apart from
    /// `compile` because conditions stored with their runs predate it.
    pub(crate) fn operand_type_error(&self) -> Option<ConditionError> {
        self.check_operands().map(|(span, message)| type_error(span, message))
    }

    /// The first operand of `&&` / `||` that fails on the probe contact with an
    /// error of types (a string compared with a number, a method on the wrong
    /// type), evaluated on its own. Failures that depend on the values (a
    /// division by zero, a missing key) are left to run time.
    fn check_operands(&self) -> Option<(Range<usize>, String)> {
        let mut ctx = Context::with_env(self.env.clone());
        ctx.add_variable("contact", cel::to_value(contact_schema()).ok()?)
            .ok()?;
        ctx.add_variable("event", cel::to_value(event_schema()).ok()?).ok()?;
        let info = self.program.source_info();
        let mut found = None;
        walk(self.program.expression(), &mut Vec::new(), &mut |expr, bound| {
            let Expr::Call(call) = &expr.expr else { return };
            // Inside `exists(t, ...)` an operand needs `t`, which only the whole expression binds.
            if found.is_some() || !bound.is_empty() || !matches!(call.func_name.as_str(), "_&&_" | "_||_") {
                return;
            }
            for operand in &call.args {
                if let Err(e) = Value::resolve(operand, &ctx)
                    && is_type_error(&e)
                {
                    let (mut start, mut end) = (u32::MAX, 0);
                    walk(operand, &mut Vec::new(), &mut |e, _| {
                        if let Some((s, t)) = info.offset_for(e.id) {
                            (start, end) = (start.min(s), end.max(t.max(s + 1)));
                        }
                    });
                    let span = if start <= end {
                        start as usize..(end as usize).min(self.source.len())
                    } else {
                        0..self.source.len()
                    };
                    found = Some((span, e.to_string()));
                    return;
                }
            }
        });
        found
    }

    /// True when the condition holds. Errors at run time (e.g. a missing map key)
    /// are reported, never taken as true.
    pub fn evaluate(&self, contact: &serde_json::Value, event: &serde_json::Value) -> Result<bool, String> {
        let mut ctx = Context::with_env(self.env.clone());
        ctx.add_variable("contact", cel::to_value(contact).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{e:?}"))?;
        ctx.add_variable("event", cel::to_value(event).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{e:?}"))?;
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the condition gives {:?}, not a bool", other.type_of())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Which part of the condition was false for `contact` and `event`, with the
    /// values of the fields that part reads, for `nudge explain`. It goes down
    /// through `&&` to the first operand that is false: that is what excluded the
    /// contact. An `||` is shown whole (every side of it was false).
    pub(crate) fn explain_false(&self, contact: &serde_json::Value, event: &serde_json::Value) -> Falsity {
        let whole = || Falsity {
            part: self.source.clone(),
            values: self.values_read(self.program.expression(), contact, event),
        };
        let mut ctx = Context::with_env(self.env.clone());
        let added = cel::to_value(contact)
            .ok()
            .and_then(|c| ctx.add_variable("contact", c).ok())
            .and_then(|_| cel::to_value(event).ok())
            .and_then(|e| ctx.add_variable("event", e).ok());
        if added.is_none() {
            return whole();
        }
        let mut node = self.program.expression();
        while let Expr::Call(call) = &node.expr
            && call.func_name == "_&&_"
            && let Some(false_one) = call
                .args
                .iter()
                .find(|arg| matches!(Value::resolve(arg, &ctx), Ok(Value::Bool(false))))
        {
            node = false_one;
        }
        Falsity {
            part: self
                .source
                .get(self.span_of(node))
                .unwrap_or(&self.source)
                .trim()
                .to_string(),
            values: self.values_read(node, contact, event),
        }
    }

    /// The byte range of the source an expression node was parsed from.
    fn span_of(&self, expr: &IdedExpr) -> Range<usize> {
        let info = self.program.source_info();
        let (mut start, mut end) = (usize::MAX, 0);
        walk(expr, &mut Vec::new(), &mut |e, _| {
            if let Some((s, t)) = info.offset_for(e.id) {
                let (s, t) = (s as usize, t as usize);
                // A select node sits at its dot: its end is that of the field name.
                let t = match &e.expr {
                    Expr::Select(select) => s + 1 + select.field.len(),
                    _ => t.max(s + 1),
                };
                (start, end) = (start.min(s), end.max(t));
            }
        });
        if start >= end {
            return 0..self.source.len();
        }
        // A string literal's node may stop short of its closing quote: take it in.
        let mut end = end.min(self.source.len());
        for quote in ['"', '\''] {
            let (Some(inside), Some(rest)) = (self.source.get(start..end), self.source.get(end..)) else {
                break;
            };
            if inside.matches(quote).count() % 2 == 1
                && let Some(close) = rest.find(quote)
            {
                end += close + 1;
            }
        }
        start..end
    }

    /// The `contact.x` / `event.x` fields `expr` reads, with their values.
    fn values_read(
        &self,
        expr: &IdedExpr,
        contact: &serde_json::Value,
        event: &serde_json::Value,
    ) -> BTreeMap<String, serde_json::Value> {
        let mut values = BTreeMap::new();
        walk(expr, &mut Vec::new(), &mut |e, bound| {
            if let Expr::Select(select) = &e.expr
                && let Expr::Ident(root) = &select.operand.expr
                && !bound.contains(root)
            {
                let from = match root.as_str() {
                    "contact" => contact,
                    "event" => event,
                    _ => return,
                };
                let value = from.get(&select.field).cloned().unwrap_or_default();
                values.insert(format!("{root}.{}", select.field), value);
            }
        });
        values
    }

    fn check_fields(&self) -> Result<(), ConditionError> {
        let known: BTreeMap<&str, Vec<String>> =
            [("contact", keys(&contact_schema())), ("event", keys(&event_schema()))]
                .into_iter()
                .collect();
        let info = self.program.source_info();
        let offset = |id: u64| info.offset_for(id).map(|(start, _)| start as usize);
        let mut bound = Vec::new();
        let mut problem: Option<ConditionError> = None;
        walk(self.program.expression(), &mut bound, &mut |expr, bound| {
            if problem.is_some() {
                return;
            }
            match &expr.expr {
                Expr::Select(select) => {
                    if let Expr::Ident(root) = &select.operand.expr
                        && let Some(fields) = known.get(root.as_str())
                        && !fields.contains(&select.field)
                    {
                        // From `contact` to the end of the field name (the select node sits at the dot).
                        let start = offset(select.operand.id).unwrap_or(0);
                        let end = offset(expr.id).map_or(self.source.len(), |dot| dot + 1 + select.field.len());
                        let names = fields.iter().map(String::as_str);
                        problem = Some(ConditionError {
                            span: start..end.min(self.source.len()),
                            message: format!("`{root}` has no field `{}`", select.field),
                            help: Some(
                                super::diagnostic::did_you_mean(&select.field, names)
                                    .unwrap_or_else(|| format!("known fields: {}", fields.join(", "))),
                            ),
                        });
                    }
                }
                Expr::Ident(name) if !known.contains_key(name.as_str()) && !bound.contains(name) => {
                    let start = offset(expr.id).unwrap_or(0);
                    problem = Some(ConditionError {
                        span: start..(start + name.len()).min(self.source.len()),
                        message: format!("unknown name `{name}`"),
                        help: Some("a condition reads `contact.<field>` and `event.<field>`".into()),
                    });
                }
                _ => {}
            }
        });
        problem.map_or(Ok(()), Err)
    }
}

fn type_error(span: Range<usize>, message: String) -> ConditionError {
    ConditionError {
        span,
        message: format!("type error: {message}"),
        help: Some("a condition must be a bool built from contact fields, e.g. `contact.tags.size() > 0`".into()),
    }
}

fn is_type_error(e: &cel::ExecutionError) -> bool {
    use cel::ExecutionError::*;
    matches!(
        e,
        InvalidArgumentCount { .. }
            | UnsupportedTargetType { .. }
            | NotSupportedAsMethod { .. }
            | UnsupportedKeyType(_)
            | UnexpectedType { .. }
            | NoSuchOverload(_)
            | ValuesNotComparable(..)
            | UnsupportedBinaryOperator(..)
            | UnsupportedIndex(..)
    )
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

/// Visits every node; comprehension variables (from `exists`, `all`, ...) are in `bound` inside them.
fn walk(expr: &IdedExpr, bound: &mut Vec<String>, visit: &mut dyn FnMut(&IdedExpr, &Vec<String>)) {
    visit(expr, bound);
    match &expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                walk(target, bound, visit);
            }
            for arg in &call.args {
                walk(arg, bound, visit);
            }
        }
        Expr::Select(select) => walk(&select.operand, bound, visit),
        Expr::List(list) => list.elements.iter().for_each(|e| walk(e, bound, visit)),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                    walk(&e.key, bound, visit);
                    walk(&e.value, bound, visit);
                }
            }
        }
        Expr::Comprehension(c) => {
            walk(&c.iter_range, bound, visit);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.clone());
            bound.push(c.accu_var.clone());
            for e in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                walk(e, bound, visit);
            }
            bound.truncate(before);
        }
        _ => {}
    }
}

/// Byte range of the character at a 1-based (line, column) position reported by
/// the CEL parser, whose columns count characters, not bytes.
fn offset_of(source: &str, line: isize, col: isize) -> Range<usize> {
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if i as isize + 1 == line {
            let nth = usize::try_from(col - 1).unwrap_or(0);
            let at = offset + text.char_indices().nth(nth).map_or(text.len(), |(at, _)| at);
            let end = source[at..].chars().next().map_or(at, |c| at + c.len_utf8());
            return at..end;
        }
        offset += text.len();
    }
    source.len()..source.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_on_matching_contact() {
        let c = Condition::compile(r#"contact.intent_grade == "A" && "vip" in contact.tags"#).unwrap();
        let mut contact = contact_schema();
        contact["tags"] = json!(["vip"]);
        assert!(c.evaluate(&contact, &event_schema()).unwrap());
        contact["intent_grade"] = json!("B");
        assert!(!c.evaluate(&contact, &event_schema()).unwrap());
    }

    #[test]
    fn unknown_field_is_reported_with_suggestion() {
        let err = Condition::compile(r#"contact.intent_grad == "A""#).unwrap_err();
        assert!(err.message.contains("intent_grad"), "{}", err.message);
        assert_eq!(err.help.as_deref(), Some("did you mean `intent_grade`?"));
        assert_eq!(err.span.start, 0);
    }

    #[test]
    fn type_errors_and_non_bool_results_are_refused() {
        assert!(
            Condition::compile(r#"contact.name > 3"#)
                .unwrap_err()
                .message
                .starts_with("type error")
        );
        assert!(
            Condition::compile(r#"contact.name"#)
                .unwrap_err()
                .message
                .contains("not a bool")
        );
        assert!(Condition::compile(r#"contact.tags.exists(t, t == "vip")"#).is_ok());
        assert!(
            Condition::compile(r#"contact.name == "#)
                .unwrap_err()
                .message
                .contains("syntax")
        );
    }

    #[test]
    fn positions_after_non_ascii_text_are_byte_offsets_of_the_right_character() {
        let source = r#"contact.company == "阿里巴巴" && ) "#;
        let err = Condition::compile(source).unwrap_err();
        assert_eq!(&source[err.span.clone()], ")", "{err:?}");
        let source = r#"contact.company == "阿里巴巴" && contact.nmae == "x""#;
        let err = Condition::compile(source).unwrap_err();
        assert_eq!(&source[err.span.clone()], "contact.nmae", "{err:?}");
        let source = "contact.name == )";
        let err = Condition::compile(source).unwrap_err();
        assert_eq!(&source[err.span.clone()], ")", "{err:?}");
    }

    #[test]
    fn a_type_error_behind_and_or_or_is_found() {
        let operand_error = |source: &str| Condition::compile(source).unwrap().operand_type_error();
        let source = r#"contact.stage == "nobody" && contact.name > 3"#;
        let err = operand_error(source).unwrap();
        assert!(err.message.starts_with("type error"), "{err:?}");
        assert_eq!(&source[err.span.clone()], "contact.name > 3", "{err:?}");
        let source = r#"contact.stage == "lead" || contact.tags.size() > "x""#;
        assert!(operand_error(source).unwrap().message.starts_with("type error"));
        // What depends on values is left to run time; comprehension variables are bound.
        let r = operand_error("contact.follow_up_count > 0u && 10u / contact.follow_up_count > 2u");
        assert!(r.is_none(), "{r:?}");
        assert!(operand_error(r#"contact.tags.exists(t, t == "vip" && t != "x")"#).is_none());
    }

    #[test]
    fn the_false_part_is_shown_with_the_values_it_read() {
        let c = Condition::compile(
            r#"contact.stage == "lead" && (contact.intent_grade == "A" || "vip" in contact.tags) && contact.order_count < 3"#,
        )
        .unwrap();
        let mut contact = contact_schema();
        contact["stage"] = json!("lead");
        contact["intent_grade"] = json!("B");
        contact["tags"] = json!(["new"]);
        contact["order_count"] = json!(0);
        assert!(!c.evaluate(&contact, &event_schema()).unwrap());
        let why = c.explain_false(&contact, &event_schema());
        assert_eq!(
            why.part,
            r#"(contact.intent_grade == "A" || "vip" in contact.tags)"#.trim_matches(['(', ')'])
        );
        assert_eq!(
            why.values,
            BTreeMap::from([
                ("contact.intent_grade".to_string(), json!("B")),
                ("contact.tags".to_string(), json!(["new"])),
            ])
        );
        contact["intent_grade"] = json!("A");
        contact["stage"] = json!("customer");
        let why = c.explain_false(&contact, &event_schema());
        assert_eq!(why.part, r#"contact.stage == "lead""#);
        assert_eq!(
            why.values,
            BTreeMap::from([("contact.stage".to_string(), json!("customer"))])
        );
        contact["stage"] = json!("lead");
        contact["order_count"] = json!(5);
        let why = c.explain_false(&contact, &event_schema());
        assert_eq!(why.part, "contact.order_count < 3");
        assert_eq!(why.values["contact.order_count"], json!(5));
        let single = Condition::compile(r#"event.to == "won""#).unwrap();
        let why = single.explain_false(&contact, &event_schema());
        assert_eq!(why.part, r#"event.to == "won""#);
        assert_eq!(why.values["event.to"], json!("inquiry"));
    }

    #[test]
    fn a_deep_expression_is_explained_not_dumped() {
        let source = format!("{}contact.stage == \"lead\"{}", "(".repeat(120), ")".repeat(120));
        let err = Condition::compile(&source).unwrap_err();
        assert_eq!(err.message, "the expression is nested too deeply (more than 96 levels)");
        assert!(err.help.unwrap().contains("flatter"));
    }
}
