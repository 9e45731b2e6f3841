//! Search queries: typed conditions become SQL over the index tables, written once for both
//! backends. Every condition selects resource keys (`pk IN (...)` subqueries that the index
//! `(param, value, resource_pk)` answers), so a query never reads resource content to filter.
//!
//! Placeholders are `$n`, numbered in the order they appear in the text: PostgreSQL reads them
//! natively and SQLite binds named parameters by order of first appearance.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};

use super::sql::{Sql, run};

use super::{AnyConnection, StoreError};
use crate::fhir::instant::Micros;
use crate::search::extract::normalize;
use crate::search::query::{Condition, Modifier, Prefix, SearchValue};
use crate::search::registry::ParamType;

/// The next string after every string starting with `prefix` (for prefix range scans that
/// use the `(param, value)` index on both backends).
fn prefix_upper_bound(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

/// A `LIKE` pattern matching `text` anywhere, with `%`, `_` and `\` escaped.
fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

fn table_of(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "search_string",
        ParamType::Token => "search_token",
        ParamType::Reference => "search_reference",
        ParamType::Date => "search_date",
        ParamType::Number | ParamType::Quantity => "search_quantity",
        ParamType::Uri => "search_uri",
        ParamType::Composite => "search_composite",
        ParamType::Special => "search_token",
    }
}

/// How a condition is joined to its resource row. The one most selective condition drives the
/// query (`pk IN (...)`, answered from the index); the others are checked per candidate with a
/// correlated `EXISTS` on `(resource_pk, param)`, so no large key list is built for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    Drive,
    Filter,
}

/// How well a condition narrows the result: lower drives better. `None`: it cannot drive (a
/// negation or absence matches most resources).
fn selectivity(cond: &Condition) -> Option<u8> {
    match cond {
        Condition::Id(_) => Some(0),
        Condition::Match {
            modifier: Modifier::Not,
            ..
        }
        | Condition::Missing { .. } => None,
        Condition::Match {
            param, modifier, ..
        } => Some(match (param.kind, modifier) {
            (ParamType::Reference | ParamType::Token, _) => 1,
            (ParamType::String, Modifier::Exact) => 1,
            (ParamType::String, Modifier::Contains) => 5,
            (ParamType::String, _) | (ParamType::Uri, _) => 2,
            _ => 4,
        }),
        Condition::Chain { .. } | Condition::Has { .. } => Some(3),
        Condition::LastUpdated(_) | Condition::AnyOf(_) | Condition::AllOf(_) => Some(4),
    }
}

/// Appends the SQL of `condition` on the resources row aliased `alias`.
fn condition(sql: &mut Sql, alias: &str, cond: &Condition) {
    joined_condition(sql, alias, cond, Join::Drive);
}

fn joined_condition(sql: &mut Sql, alias: &str, cond: &Condition, join: Join) {
    match cond {
        Condition::Id(ids) => {
            sql.push(&format!("{alias}.id IN ("));
            sql.text_list(ids.iter().map(String::as_str));
            sql.push(")");
        }
        Condition::LastUpdated(values) => {
            sql.push("(");
            for (index, value) in values.iter().enumerate() {
                if index > 0 {
                    sql.push(" OR ");
                }
                if let SearchValue::Date { prefix, start, end } = value {
                    let column = format!("{alias}.last_updated");
                    let end_column = format!("({alias}.last_updated + 1)");
                    date_predicate(sql, &column, &end_column, *prefix, *start, *end);
                }
            }
            sql.push(")");
        }
        Condition::Missing { param, missing } => {
            let table = table_of(param.kind);
            let x = sql.alias("x");
            sql.push(&format!(
                "{}EXISTS (SELECT 1 FROM {table} {x} WHERE {x}.resource_pk = {alias}.pk AND ",
                if *missing { "NOT " } else { "" }
            ));
            sql.unindexed_equals(&format!("{x}.param"));
            sql.text(&param.code);
            sql.push(")");
        }
        Condition::Match {
            param,
            modifier,
            values,
        } => {
            let negate = *modifier == Modifier::Not;
            let (table, param_name) = match (param.kind, modifier) {
                (ParamType::Reference, Modifier::Identifier) => {
                    ("search_token", format!("{}:identifier", param.code))
                }
                (ParamType::Token, Modifier::OfType) => {
                    ("search_token", format!("{}:of-type", param.code))
                }
                (kind, _) => (table_of(kind), param.code.clone()),
            };
            if join == Join::Drive && !negate {
                sql.push(&format!(
                    "{alias}.pk IN (SELECT resource_pk FROM {table} WHERE param = "
                ));
            } else {
                // `|| ''` keeps the planner on the (resource_pk, param) index: the value
                // indexes start with param and would be scanned for every candidate.
                let x = sql.alias("x");
                sql.push(&format!(
                    "{}EXISTS (SELECT 1 FROM {table} {x} WHERE {x}.resource_pk = {alias}.pk AND ",
                    if negate { "NOT " } else { "" }
                ));
                sql.unindexed_equals(&format!("{x}.param"));
            }
            sql.text(&param_name);
            sql.push(" AND (");
            for (index, value) in values.iter().enumerate() {
                if index > 0 {
                    sql.push(" OR ");
                }
                value_predicate(sql, param.kind, modifier, value);
            }
            sql.push("))");
        }
        Condition::Chain { param, targets } => {
            sql.push("(");
            for (index, (target_type, inner)) in targets.iter().enumerate() {
                if index > 0 {
                    sql.push(" OR ");
                }
                let target = sql.alias("t");
                let reference = sql.alias("sr");
                // The matching targets first, then the references to them by the
                // (param, target_id) index: joined the other way round, SQLite probed every
                // reference against every matching target (minutes on 100,000 Tasks).
                //
                // On PostgreSQL the matching targets are a materialized CTE: they are computed
                // once. Inlined, a planner without statistics (a fresh table) nests the levels of
                // a chain as loops that re-run each inner level per outer row, exponential in
                // the chain's depth.
                let targets = format!(
                    "SELECT {target}.id FROM resources {target} WHERE {target}.resource_type = "
                );
                if sql.sqlite {
                    sql.push(&format!(
                        "{alias}.pk IN (SELECT {reference}.resource_pk FROM search_reference {reference} \
                         WHERE {reference}.param = "
                    ));
                } else {
                    sql.push(&format!(
                        "{alias}.pk IN (WITH {target}_ids AS MATERIALIZED ("
                    ));
                    sql.push(&targets);
                    sql.text(target_type);
                    sql.push(&format!(" AND {target}.deleted = 0 AND "));
                    condition(sql, &target, inner);
                    sql.push(&format!(
                        ") SELECT {reference}.resource_pk FROM search_reference {reference} \
                         WHERE {reference}.param = "
                    ));
                }
                sql.text(&param.code);
                sql.push(&format!(" AND {reference}.target_type = "));
                sql.text(target_type);
                if sql.sqlite {
                    sql.push(&format!(" AND {reference}.target_id IN ("));
                    sql.push(&targets);
                    sql.text(target_type);
                    sql.push(&format!(" AND {target}.deleted = 0 AND "));
                    condition(sql, &target, inner);
                    sql.push("))");
                } else {
                    sql.push(&format!(
                        " AND {reference}.target_id IN (SELECT id FROM {target}_ids))"
                    ));
                }
            }
            sql.push(")");
        }
        // an empty OR matches nothing, an empty AND everything
        Condition::AnyOf(conditions) => combined(sql, alias, conditions, " OR ", "1 = 0"),
        Condition::AllOf(conditions) => combined(sql, alias, conditions, " AND ", "1 = 1"),
        Condition::Has {
            source_type,
            reference_param,
            inner,
        } => {
            let source = sql.alias("s");
            let reference = sql.alias("sr");
            // a row-value IN, not correlated to `alias`: the subquery runs once, also when
            // `_has` is nested (correlated, nesting made it run once per candidate per level)
            // On PostgreSQL a materialized CTE, computed once (see the chains above).
            let (open, close) = if sql.sqlite {
                (String::new(), ")".to_string())
            } else {
                (
                    format!("WITH {source}_refs AS MATERIALIZED ("),
                    format!(") SELECT * FROM {source}_refs)"),
                )
            };
            sql.push(&format!(
                "({alias}.resource_type, {alias}.id) IN ({open}SELECT {reference}.target_type, {reference}.target_id \
                 FROM search_reference {reference} JOIN resources {source} \
                 ON {source}.pk = {reference}.resource_pk WHERE {reference}.param = "
            ));
            sql.text(reference_param);
            sql.push(&format!(" AND {source}.resource_type = "));
            sql.text(source_type);
            sql.push(&format!(" AND {source}.deleted = 0 AND "));
            condition(sql, &source, inner);
            sql.push(&close);
        }
    }
}

/// `(a OP b OP ...)` over `conditions`, or `empty` when there are none.
fn combined(sql: &mut Sql, alias: &str, conditions: &[Condition], operator: &str, empty: &str) {
    sql.push("(");
    for (index, inner) in conditions.iter().enumerate() {
        if index > 0 {
            sql.push(operator);
        }
        condition(sql, alias, inner);
    }
    if conditions.is_empty() {
        sql.push(empty);
    }
    sql.push(")");
}

/// `value` with its text cut as the index cuts it (`extract::MAX_INDEXED_CHARS`).
fn as_indexed(value: &SearchValue) -> SearchValue {
    use crate::search::extract::indexed_text;
    let cut = |text: &String| indexed_text(text).to_string();
    let cut_option = |text: &Option<String>| text.as_ref().map(cut);
    match value {
        SearchValue::String(text) => SearchValue::String(cut(text)),
        SearchValue::Token { system, code } => SearchValue::Token {
            system: cut_option(system),
            code: cut_option(code),
        },
        SearchValue::Reference {
            target_type,
            id,
            url,
        } => SearchValue::Reference {
            target_type: cut_option(target_type),
            id: cut_option(id),
            url: url.clone(),
        },
        SearchValue::Uri(uri) => SearchValue::Uri(cut(uri)),
        SearchValue::Composite {
            system,
            code,
            second,
        } => SearchValue::Composite {
            system: cut_option(system),
            code: cut(code),
            second: Box::new(as_indexed(second)),
        },
        other => other.clone(),
    }
}

fn value_predicate(sql: &mut Sql, kind: ParamType, modifier: &Modifier, value: &SearchValue) {
    // `:exact` compares the untruncated column; everything else the indexed, cut one
    let cut;
    let value = if *modifier == Modifier::Exact {
        value
    } else {
        cut = as_indexed(value);
        &cut
    };
    match (kind, value) {
        (ParamType::String, SearchValue::String(text)) => match modifier {
            Modifier::Exact => {
                sql.push("exact = ");
                sql.text(text);
            }
            Modifier::Contains => {
                sql.push("normalized LIKE ");
                sql.text(&contains_pattern(&normalize(text)));
                sql.push(" ESCAPE '\\'");
            }
            _ => {
                let prefix = normalize(text);
                sql.push("(normalized >= ");
                sql.text(&prefix);
                sql.push(" AND normalized < ");
                sql.text(&prefix_upper_bound(&prefix));
                sql.push(")");
            }
        },
        (ParamType::Token, SearchValue::String(text)) => {
            // :text: prefix of the normalized display or text
            let prefix = normalize(text);
            sql.push("(text >= ");
            sql.text(&prefix);
            sql.push(" AND text < ");
            sql.text(&prefix_upper_bound(&prefix));
            sql.push(")");
        }
        (ParamType::Token | ParamType::Reference, SearchValue::Token { system, code }) => {
            sql.push("(");
            let mut first = true;
            if let Some(code) = code {
                sql.push("code = ");
                sql.text(code);
                first = false;
            }
            if let Some(system) = system {
                if !first {
                    sql.push(" AND ");
                }
                sql.push("system = ");
                sql.text(system);
                first = false;
            }
            if first {
                sql.push("1 = 1");
            }
            sql.push(")");
        }
        (
            ParamType::Reference,
            SearchValue::Reference {
                target_type,
                id,
                url,
            },
        ) => {
            sql.push("(");
            match (id, url) {
                (Some(id), url) => {
                    sql.push("(target_id = ");
                    sql.text(id);
                    if let Some(target_type) = target_type {
                        sql.push(" AND target_type = ");
                        sql.text(target_type);
                    }
                    sql.push(")");
                    if let Some(url) = url {
                        sql.push(" OR url = ");
                        sql.text(url);
                    }
                }
                (None, Some(url)) => {
                    sql.push("url = ");
                    sql.text(url);
                }
                (None, None) => sql.push("1 = 0"),
            }
            sql.push(")");
        }
        (ParamType::Date, SearchValue::Date { prefix, start, end }) => {
            date_predicate(sql, "start_at", "end_at", *prefix, *start, *end)
        }
        (
            ParamType::Number | ParamType::Quantity,
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            },
        ) => {
            sql.push("(");
            quantity_predicate(sql, *prefix, *value, *low, *high);
            if let Some(system) = system {
                sql.push(" AND system = ");
                sql.text(system);
            }
            if let Some(code) = code {
                sql.push(" AND code = ");
                sql.text(code);
            }
            sql.push(")");
        }
        (
            ParamType::Composite,
            SearchValue::Composite {
                system,
                code,
                second,
            },
        ) => {
            sql.push("(code = ");
            sql.text(code);
            if let Some(system) = system {
                sql.push(" AND system = ");
                sql.text(system);
            }
            sql.push(" AND ");
            match &**second {
                SearchValue::Token { system, code } => {
                    sql.push("(1 = 1");
                    if let Some(code) = code {
                        sql.push(" AND v_code = ");
                        sql.text(code);
                    }
                    if let Some(system) = system {
                        sql.push(" AND v_system = ");
                        sql.text(system);
                    }
                    sql.push(")");
                }
                SearchValue::String(text) => {
                    let prefix = normalize(text);
                    sql.push("(v_code >= ");
                    sql.text(&prefix);
                    sql.push(" AND v_code < ");
                    sql.text(&prefix_upper_bound(&prefix));
                    sql.push(")");
                }
                SearchValue::Reference {
                    target_type, id, ..
                } => {
                    sql.push("v_code = ");
                    sql.text(id.as_deref().unwrap_or_default());
                    if let Some(target_type) = target_type {
                        sql.push(" AND v_system = ");
                        sql.text(target_type);
                    }
                }
                SearchValue::Quantity {
                    prefix,
                    value,
                    low,
                    high,
                    system,
                    code,
                } => {
                    sql.push("(low IS NOT NULL AND ");
                    quantity_predicate(sql, *prefix, *value, *low, *high);
                    if let Some(system) = system {
                        sql.push(" AND v_system = ");
                        sql.text(system);
                    }
                    if let Some(code) = code {
                        sql.push(" AND v_code = ");
                        sql.text(code);
                    }
                    sql.push(")");
                }
                SearchValue::Date { prefix, start, end } => {
                    sql.push("(start_at IS NOT NULL AND ");
                    date_predicate(sql, "start_at", "end_at", *prefix, *start, *end);
                    sql.push(")");
                }
                _ => sql.push("1 = 0"),
            }
            sql.push(")");
        }
        (ParamType::Uri, SearchValue::Uri(uri)) => match modifier {
            Modifier::Below => {
                sql.push("(uri >= ");
                sql.text(uri);
                sql.push(" AND uri < ");
                sql.text(&prefix_upper_bound(uri));
                sql.push(")");
            }
            Modifier::Above => {
                sql.push("substr(");
                sql.text(uri);
                sql.push(", 1, length(uri)) = uri");
            }
            _ => {
                sql.push("uri = ");
                sql.text(uri);
            }
        },
        _ => sql.push("1 = 0"),
    }
}

/// Date comparisons of a stored range `[start, end)` with the search range `[lo, hi)`
/// (search.html#prefix).
fn date_predicate(sql: &mut Sql, start: &str, end: &str, prefix: Prefix, lo: Micros, hi: Micros) {
    let contained = |sql: &mut Sql| {
        sql.push(&format!("({start} >= "));
        sql.int(lo);
        sql.push(&format!(" AND {end} <= "));
        sql.int(hi);
        sql.push(")");
    };
    match prefix {
        Prefix::Eq => contained(sql),
        Prefix::Ne => {
            sql.push("NOT ");
            contained(sql);
        }
        Prefix::Gt => {
            sql.push(&format!("{end} > "));
            sql.int(hi);
        }
        Prefix::Lt => {
            sql.push(&format!("{start} < "));
            sql.int(lo);
        }
        Prefix::Ge => {
            sql.push(&format!("({end} > "));
            sql.int(hi);
            sql.push(" OR ");
            contained(sql);
            sql.push(")");
        }
        Prefix::Le => {
            sql.push(&format!("({start} < "));
            sql.int(lo);
            sql.push(" OR ");
            contained(sql);
            sql.push(")");
        }
        Prefix::Sa => {
            sql.push(&format!("{start} >= "));
            sql.int(hi);
        }
        Prefix::Eb => {
            sql.push(&format!("{end} <= "));
            sql.int(lo);
        }
        Prefix::Ap => {
            // within 10% of the distance to now, at least a day, either side
            let now = crate::fhir::instant::now_micros();
            let margin = ((now - lo).abs() / 10).max(86_400_000_000);
            sql.push(&format!("({start} < "));
            sql.int(hi.saturating_add(margin));
            sql.push(&format!(" AND {end} > "));
            sql.int(lo.saturating_sub(margin));
            sql.push(")");
        }
    }
}

/// Number and quantity comparisons of a stored `[low, high]` with the search value `value`
/// whose precision implies `[lo, hi)`.
fn quantity_predicate(sql: &mut Sql, prefix: Prefix, value: f64, lo: f64, hi: f64) {
    let compare = |sql: &mut Sql, column: &str, op: &str, operand: f64| {
        sql.push(&format!("{column} {op} "));
        sql.float(operand);
    };
    match prefix {
        Prefix::Eq | Prefix::Ne => {
            if prefix == Prefix::Ne {
                sql.push("NOT ");
            }
            sql.push("(");
            compare(sql, "low", ">=", lo);
            sql.push(" AND ");
            compare(sql, "high", "<", hi);
            sql.push(")");
        }
        Prefix::Gt => compare(sql, "high", ">", value),
        Prefix::Lt => compare(sql, "low", "<", value),
        Prefix::Ge => compare(sql, "high", ">=", value),
        Prefix::Le => compare(sql, "low", "<=", value),
        Prefix::Sa => compare(sql, "low", ">", value),
        Prefix::Eb => compare(sql, "high", "<", value),
        Prefix::Ap => {
            let margin = (value * 0.1).abs();
            sql.push("(");
            compare(sql, "low", "<=", value + margin);
            sql.push(" AND ");
            compare(sql, "high", ">=", value - margin);
            sql.push(")");
        }
    }
}

/// A sort key (`_sort`).
#[derive(Debug, Clone)]
pub enum SortKey {
    LastUpdated {
        descending: bool,
    },
    Id {
        descending: bool,
    },
    Param {
        code: String,
        kind: ParamType,
        descending: bool,
    },
}

/// What to search.
#[derive(Debug, Clone, Default)]
pub struct SearchSpec {
    /// Resource types to search (empty: every type).
    pub types: Vec<String>,
    pub conditions: Vec<Condition>,
    pub sort: Vec<SortKey>,
    /// Keyset paging in the default order: resources after / before this key.
    pub after_pk: Option<i64>,
    pub before_pk: Option<i64>,
    /// Offset paging, used only with `_sort`.
    pub offset: i64,
    pub limit: i64,
}

/// One matching resource.
#[derive(Debug, Clone, QueryableByName)]
pub struct Found {
    #[diesel(sql_type = BigInt)]
    pub pk: i64,
    #[diesel(sql_type = Text)]
    pub resource_type: String,
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = BigInt)]
    pub version_id: i64,
    #[diesel(sql_type = BigInt)]
    pub last_updated: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub content: Option<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Rows a driving condition may match before walking the type's resources in key order (and
/// filtering) is cheaper than building its key list. A walk checks about
/// `type size / matches × page size` candidates, a key list costs `matches`: they break even
/// near `sqrt(type size × page size)`, 1,600 for 125,000 Patients and pages of 20 (at 500, a
/// name matching 1,400 of them walked 1,800 candidates: p99 32 ms at 1 million resources).
const DRIVER_PROBE_LIMIT: i64 = 2_000;

/// Whether the most selective condition really is selective: a token like `status=active`
/// may match most of a type, and then it should filter, not drive.
fn should_drive(conn: &mut AnyConnection, spec: &SearchSpec) -> Result<bool, StoreError> {
    let Some(best) = spec
        .conditions
        .iter()
        .min_by_key(|c| selectivity(c).unwrap_or(u8::MAX))
    else {
        return Ok(false);
    };
    let Condition::Match {
        param,
        modifier,
        values,
    } = best
    else {
        return Ok(selectivity(best).is_some());
    };
    if selectivity(best).is_none() || matches!(modifier, Modifier::Identifier | Modifier::OfType) {
        return Ok(selectivity(best).is_some());
    }
    // `system|code` and `Type/id` name one thing: no need to count.
    let specific = values.iter().all(|v| match v {
        SearchValue::Token {
            system: Some(system),
            code: Some(_),
        } => !system.is_empty(),
        SearchValue::Reference { id: Some(_), .. } => true,
        _ => false,
    });
    if specific {
        return Ok(true);
    }
    let mut sql = Sql::for_connection(conn);
    sql.push(&format!(
        "SELECT COUNT(*) AS count FROM (SELECT 1 FROM {} WHERE param = ",
        table_of(param.kind)
    ));
    sql.text(&param.code);
    sql.push(" AND (");
    for (index, value) in values.iter().enumerate() {
        if index > 0 {
            sql.push(" OR ");
        }
        value_predicate(&mut sql, param.kind, modifier, value);
    }
    sql.push(")");
    sql.limit("LIMIT", DRIVER_PROBE_LIMIT);
    sql.push(") x");
    let rows: Vec<Count> = run(conn, sql)?;
    Ok(rows.first().is_none_or(|r| r.count < DRIVER_PROBE_LIMIT))
}

fn where_clause(sql: &mut Sql, spec: &SearchSpec) {
    where_clause_driven(sql, spec, true);
}

fn where_clause_driven(sql: &mut Sql, spec: &SearchSpec, may_drive: bool) {
    sql.push(" WHERE r.deleted = 0");
    let mut order: Vec<&Condition> = spec.conditions.iter().collect();
    order.sort_by_key(|c| selectivity(c).unwrap_or(u8::MAX));
    let driver = may_drive && order.first().is_some_and(|c| selectivity(c).is_some());
    // PostgreSQL checks filters per candidate only when a key list drives; otherwise its
    // semi-joins over the value indexes are the better plan.
    sql.hint_filters = sql.sqlite || driver;
    if !spec.types.is_empty() {
        // With a driving condition, keep the planner on it: `|| ''` hides the type column from
        // the type index, which SQLite would otherwise scan in key order to satisfy ORDER BY.
        sql.push(if driver {
            " AND r.resource_type || '' IN ("
        } else {
            " AND r.resource_type IN ("
        });
        sql.text_list(spec.types.iter().map(String::as_str));
        sql.push(")");
    }
    for (index, cond) in order.into_iter().enumerate() {
        sql.push(" AND ");
        joined_condition(
            sql,
            "r",
            cond,
            if index == 0 && driver {
                Join::Drive
            } else {
                Join::Filter
            },
        );
    }
}

const COLUMNS: &str =
    "SELECT r.pk, r.resource_type, r.id, r.version_id, r.last_updated, r.content FROM resources r";

/// The matching resources of one page, in order.
pub fn search(conn: &mut AnyConnection, spec: &SearchSpec) -> Result<Vec<Found>, StoreError> {
    let drive = should_drive(conn, spec)?;
    let mut sql = Sql::for_connection(conn);
    sql.push(COLUMNS);
    where_clause_driven(&mut sql, spec, drive);
    // A selective condition's key list, in key order, filtered per candidate: the same plan
    // suits all values (chains and `_has` plan inner searches of their own, so they are not kept).
    sql.one_plan_fits_all = drive
        && spec.sort.is_empty()
        && spec
            .conditions
            .iter()
            .all(|c| matches!(c, Condition::Match { .. } | Condition::Id(_)));
    let reversed = spec.before_pk.is_some() && spec.sort.is_empty();
    if spec.sort.is_empty() {
        if let Some(after) = spec.after_pk {
            sql.push(" AND r.pk > ");
            sql.int(after);
        }
        if let Some(before) = spec.before_pk {
            sql.push(" AND r.pk < ");
            sql.int(before);
        }
        sql.push(if reversed {
            " ORDER BY r.pk DESC"
        } else {
            " ORDER BY r.pk"
        });
    } else {
        sql.push(" ORDER BY ");
        for key in &spec.sort {
            match key {
                SortKey::LastUpdated { descending } => sql.push(&format!(
                    "r.last_updated{}, ",
                    if *descending { " DESC" } else { "" }
                )),
                SortKey::Id { descending } => {
                    sql.push(&format!("r.id{}, ", if *descending { " DESC" } else { "" }))
                }
                SortKey::Param {
                    code,
                    kind,
                    descending,
                } => {
                    let (column, table) = match kind {
                        ParamType::String => ("normalized", "search_string"),
                        ParamType::Token => ("code", "search_token"),
                        ParamType::Reference => ("target_id", "search_reference"),
                        ParamType::Date => ("start_at", "search_date"),
                        ParamType::Number | ParamType::Quantity => ("low", "search_quantity"),
                        _ => ("uri", "search_uri"),
                    };
                    let aggregate = if *descending { "MAX" } else { "MIN" };
                    // Resources without a value sort last either way.
                    sql.push(&format!(
                        "(SELECT COUNT(*) FROM {table} x WHERE x.resource_pk = r.pk AND x.param = "
                    ));
                    sql.text(code);
                    sql.push(&format!(") = 0, (SELECT {aggregate}(x.{column}) FROM {table} x WHERE x.resource_pk = r.pk AND x.param = "));
                    sql.text(code);
                    sql.push(&format!("){}, ", if *descending { " DESC" } else { "" }));
                }
            }
        }
        sql.push("r.pk");
    }
    sql.limit("LIMIT", spec.limit);
    if !spec.sort.is_empty() && spec.offset > 0 {
        sql.limit("OFFSET", spec.offset);
    }
    let mut found: Vec<Found> = run(conn, sql)?;
    if reversed {
        found.reverse();
    }
    Ok(found)
}

/// How many resources match (for `_total=accurate` and `_summary=count`).
pub fn count(conn: &mut AnyConnection, spec: &SearchSpec) -> Result<i64, StoreError> {
    let mut sql = Sql::for_connection(conn);
    sql.push("SELECT COUNT(*) AS count FROM resources r");
    where_clause(&mut sql, spec);
    let rows: Vec<Count> = run(conn, sql)?;
    Ok(rows.first().map_or(0, |row| row.count))
}

#[derive(QueryableByName)]
struct Target {
    #[diesel(sql_type = Text)]
    target_type: String,
    #[diesel(sql_type = Text)]
    target_id: String,
}

/// `_include`: the current resources referenced through `param` (any parameter when `None`)
/// by the resources `pks`, optionally only of `target_type`; at most `limit`.
pub fn included(
    conn: &mut AnyConnection,
    pks: &[i64],
    param: Option<&str>,
    target_type: Option<&str>,
    limit: i64,
) -> Result<Vec<Found>, StoreError> {
    if pks.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::for_connection(conn);
    sql.push("SELECT DISTINCT target_type, target_id FROM search_reference WHERE resource_pk IN (");
    for (index, pk) in pks.iter().enumerate() {
        if index > 0 {
            sql.push(", ");
        }
        sql.int(*pk);
    }
    sql.push(") AND target_id <> ''");
    if let Some(param) = param {
        // `|| ''`: look rows up by resource key, not by scanning every row of the parameter
        sql.push(" AND ");
        // look the rows up by resource key on both backends, not by scanning the parameter
        sql.push("param || '' = ");
        sql.text(param);
    }
    if let Some(target_type) = target_type {
        sql.push(" AND target_type = ");
        sql.text(target_type);
    }
    sql.limit("LIMIT", limit);
    let targets: Vec<Target> = run(conn, sql)?;
    // One query per target type, so the (resource_type, id) index answers it.
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> =
        std::collections::BTreeMap::new();
    for target in &targets {
        by_type
            .entry(target.target_type.as_str())
            .or_default()
            .push(target.target_id.as_str());
    }
    let mut found = Vec::new();
    for (target_type, ids) in by_type {
        for chunk in ids.chunks(200) {
            let mut sql = Sql::for_connection(conn);
            sql.push(COLUMNS);
            sql.push(" WHERE r.deleted = 0 AND r.resource_type = ");
            sql.text(target_type);
            sql.push(" AND r.id IN (");
            sql.text_list(chunk.iter().copied());
            sql.push(")");
            found.extend(run::<Found>(conn, sql)?);
        }
    }
    Ok(found)
}

/// `_revinclude`: current `source_type` resources whose `param` (any when `None`) refers to one
/// of `targets` (type, id); at most `limit`.
pub fn revincluded(
    conn: &mut AnyConnection,
    targets: &[(String, String)],
    source_type: &str,
    param: Option<&str>,
    limit: i64,
) -> Result<Vec<Found>, StoreError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::for_connection(conn);
    sql.push(COLUMNS);
    sql.push(" WHERE r.deleted = 0 AND r.resource_type = ");
    sql.text(source_type);
    sql.push(" AND r.pk IN (SELECT resource_pk FROM search_reference WHERE (");
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> =
        std::collections::BTreeMap::new();
    for (target_type, id) in targets {
        by_type
            .entry(target_type.as_str())
            .or_default()
            .push(id.as_str());
    }
    for (index, (target_type, ids)) in by_type.iter().enumerate() {
        if index > 0 {
            sql.push(" OR ");
        }
        sql.push("(target_type = ");
        sql.text(target_type);
        sql.push(" AND target_id IN (");
        sql.text_list(ids.iter().copied());
        sql.push("))");
    }
    sql.push(")");
    if let Some(param) = param {
        sql.push(" AND param = ");
        sql.text(param);
    }
    sql.push(") ORDER BY r.pk");
    sql.limit("LIMIT", limit);
    run(conn, sql)
}

/// The SQL text of a search in one dialect, without running it (for checks of the query
/// builder, such as fuzzing).
pub fn search_sql(spec: &SearchSpec, sqlite: bool) -> String {
    let mut sql = Sql::default();
    sql.sqlite = sqlite;
    sql.hint_filters = sqlite;
    sql.push(COLUMNS);
    where_clause(&mut sql, spec);
    sql.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_of_appearance() {
        let registry = crate::search::registry::Registry::r4();
        let chain = crate::search::query::parse_condition(
            &registry,
            "Observation",
            "subject:Patient.name",
            "ana",
            0,
        );
        let has = crate::search::query::parse_condition(
            &registry,
            "Patient",
            "_has:Observation:subject:code",
            "x|1",
            0,
        );
        let spec = SearchSpec {
            types: vec!["Observation".into()],
            conditions: vec![
                chain.unwrap_or(Condition::Id(vec![])),
                has.unwrap_or(Condition::Id(vec![])),
            ],
            ..Default::default()
        };
        // `$n` for PostgreSQL; `?n` for SQLite, which would look `$n` up as a name
        for (sqlite, marker) in [(false, '$'), (true, '?')] {
            let mut sql = Sql::default();
            sql.sqlite = sqlite;
            where_clause(&mut sql, &spec);
            let other = if sqlite { '$' } else { '?' };
            assert!(!sql.text.contains(other), "{}", sql.text);
            let mut expected = 1;
            let mut rest = sql.text.as_str();
            while let Some(at) = rest.find(marker) {
                let digits: String = rest[at + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                assert_eq!(digits.parse::<usize>().ok(), Some(expected), "{}", sql.text);
                expected += 1;
                rest = &rest[at + 1..];
            }
            assert_eq!(expected - 1, sql.binds.len());
        }
    }
}
