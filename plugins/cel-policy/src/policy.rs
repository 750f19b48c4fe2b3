//! The compiled policy: every expression of the settings compiled once, and
//! the evaluation of one claim set against them.
//!
//! Evaluation never allows by accident: an expression that fails (a missing
//! key, a type error) or yields the wrong type denies, naming the expression.

use crate::check::{self, CLAIMS, ClaimUse, VARS};
use crate::claims;
use crate::explain::{Explained, Explanation, Recorder};
use crate::regex;
use crate::settings::Settings;
use cel::common::types::{CelBool, CelMap, CelMapKey, CelString, Kind};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, Program, Value};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

/// Deny messages quote CEL errors, which quote values taken from the claims;
/// they are logged, so keep one bounded whatever the token holds.
const MAX_DENY_MESSAGE: usize = 1024;

/// What the policy decided for one claim set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The token is accepted as this workload.
    Allow {
        username: String,
        groups: Vec<String>,
    },
    /// The token is refused; the text says why.
    Deny(String),
}

/// A policy ready to evaluate claims: built once per instance by `init`.
pub struct Policy {
    env: Arc<Env>,
    variables: Vec<Variable>,
    validations: Vec<(Compiled, String)>,
    username: Compiled,
    groups: Option<Compiled>,
    /// The top-level claims the expressions read, when known: the others are
    /// skipped when the claims are parsed.
    claims_used: Option<BTreeSet<String>>,
    /// Whether any expression needs `vars` bound as a map (see
    /// [`check::Names::vars_whole`]).
    vars_whole: bool,
}

/// One of the settings' `variables`.
struct Variable {
    name: String,
    /// `vars.<name>`: the qualified name its value is bound to, so that
    /// `vars.<name>` resolves without a `vars` map to rebuild (and deep-copy)
    /// after every variable.
    qualified: String,
    compiled: Compiled,
}

/// One expression of the settings, as an evaluation runs it: what
/// [`Policy::explain`] reports a result for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `variables[i]`.
    Variable(usize),
    /// `validations[i]`.
    Validation(usize),
    /// `username`.
    Username,
    /// `groups`.
    Groups,
}

/// Sees each expression an evaluation runs and what it yielded, in order.
/// `evaluate` passes `()`, which does nothing and compiles away.
pub(crate) trait Observer {
    fn ran(&mut self, step: Step, result: Result<&dyn Val, &ExecutionError>);
}

impl Observer for () {
    #[inline(always)]
    fn ran(&mut self, _: Step, _: Result<&dyn Val, &ExecutionError>) {}
}

/// One compiled expression and where it came from, for messages.
struct Compiled {
    /// The settings field it was read from, e.g. `validations[2].expression`.
    field: String,
    source: String,
    program: Program,
    /// Whether it uses `vars` as a whole: only then is the `vars` map bound.
    vars_whole: bool,
    /// The claims it reads.
    claims: ClaimUse,
}

impl Policy {
    /// Reads and compiles the settings (JSON). The error names the field, and
    /// for an expression that does not compile, the expression and position.
    pub fn new(settings_json: &str) -> Result<Policy, String> {
        let settings = Settings::from_json(settings_json)?;
        let env = Arc::new(environment()?);

        let mut names: Vec<&str> = Vec::with_capacity(settings.variables.len());
        let mut variables = Vec::with_capacity(settings.variables.len());
        for (i, var) in settings.variables.iter().enumerate() {
            check_variable_name(&env, &var.name, &names)
                .map_err(|e| format!("variables[{i}].name: {e}"))?;
            let compiled = compile(
                &env,
                format!("variables[{i}].expression"),
                &var.expression,
                &names,
            )?;
            names.push(&var.name);
            variables.push(Variable {
                name: var.name.clone(),
                qualified: format!("{VARS}.{}", var.name),
                compiled,
            });
        }

        let validations = settings
            .validations
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                if rule.message.trim().is_empty() {
                    return Err(format!("validations[{i}].message: must not be empty"));
                }
                let compiled = compile(
                    &env,
                    format!("validations[{i}].expression"),
                    &rule.expression,
                    &names,
                )?;
                Ok((compiled, rule.message.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;

        let username = compile(&env, "username".to_owned(), &settings.username, &names)?;
        let groups = settings
            .groups
            .as_deref()
            .map(|source| compile(&env, "groups".to_owned(), source, &names))
            .transpose()?;

        let all = || {
            variables
                .iter()
                .map(|v| &v.compiled)
                .chain(validations.iter().map(|(c, _)| c))
                .chain([&username])
                .chain(groups.iter())
        };
        let claims_used = match ClaimUse::union(all().map(|c| &c.claims)) {
            ClaimUse::Fields(fields) => Some(fields),
            ClaimUse::All => None,
        };
        let vars_whole = all().any(|c| c.vars_whole);

        Ok(Policy {
            env,
            variables,
            validations,
            username,
            groups,
            claims_used,
            vars_whole,
        })
    }

    /// How many variables and validations the policy holds, for a log line.
    pub fn summary(&self) -> String {
        format!(
            "{} variable(s), {} validation(s), username `{}`{}",
            self.variables.len(),
            self.validations.len(),
            self.username.source,
            if self.groups.is_some() {
                ", groups"
            } else {
                ""
            },
        )
    }

    /// Decides who the bearer of `claims_json` (a JSON object) is.
    pub fn evaluate(&self, claims_json: &str) -> Decision {
        self.evaluate_observed(claims_json, &mut ())
    }

    /// Decides exactly as [`Policy::evaluate`] does (the same code runs),
    /// and reports what each expression yielded along the way: for
    /// `gantry policy test --explain`.
    pub fn explain(&self, claims_json: &str) -> Explanation {
        let mut recorder = Recorder::default();
        let decision = self.evaluate_observed(claims_json, &mut recorder);
        let explained = |step: Step, label: &str, compiled: &Compiled| Explained {
            field: compiled.field.clone(),
            label: label.to_owned(),
            expression: compiled.source.clone(),
            outcome: recorder.outcome(step),
        };
        Explanation {
            variables: self
                .variables
                .iter()
                .enumerate()
                .map(|(i, v)| explained(Step::Variable(i), &v.name, &v.compiled))
                .collect(),
            validations: self
                .validations
                .iter()
                .enumerate()
                .map(|(i, (c, message))| explained(Step::Validation(i), message, c))
                .collect(),
            username: explained(Step::Username, "username", &self.username),
            groups: self
                .groups
                .as_ref()
                .map(|c| explained(Step::Groups, "groups", c)),
            // Evaluation stops at what denies: the last expression it ran.
            deciding: match decision {
                Decision::Deny(_) => recorder.last(),
                Decision::Allow { .. } => None,
            },
            decision,
        }
    }

    fn evaluate_observed<O: Observer>(&self, claims_json: &str, observer: &mut O) -> Decision {
        match self.try_evaluate(claims_json, observer) {
            Ok(decision) => decision,
            Err(mut reason) => {
                truncate(&mut reason, MAX_DENY_MESSAGE);
                Decision::Deny(reason)
            }
        }
    }

    fn try_evaluate<O: Observer>(
        &self,
        claims_json: &str,
        observer: &mut O,
    ) -> Result<Decision, String> {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        ctx.add_variable_as_val(
            CLAIMS,
            claims::parse(claims_json, self.claims_used.as_ref())?,
        );

        // Each variable sees the ones before it, bound as `vars.<name>`.
        // Only when an expression uses `vars` as a whole is the `vars` map
        // bound too, and then rebound only when a value was added since.
        let mut values: Vec<(&str, Box<dyn Val + '_>)> = Vec::new();
        let mut bound = None;

        for (i, var) in self.variables.iter().enumerate() {
            if var.compiled.vars_whole {
                bind_vars(&mut ctx, &values, &mut bound);
            }
            let value = var
                .compiled
                .run(&ctx, Step::Variable(i), observer)?
                .into_owned();
            if self.vars_whole {
                values.push((&var.name, value.clone()));
            }
            ctx.add_variable_as_val(var.qualified.as_str(), value);
        }

        for (i, (compiled, message)) in self.validations.iter().enumerate() {
            if compiled.vars_whole {
                bind_vars(&mut ctx, &values, &mut bound);
            }
            let value = compiled.run(&ctx, Step::Validation(i), observer)?;
            match value.downcast_ref::<CelBool>() {
                Some(b) if *b.inner() => {}
                Some(_) => return Ok(Decision::Deny(message.clone())),
                None => return Err(compiled.wrong_type("a bool", value.as_ref())),
            }
        }

        if self.username.vars_whole {
            bind_vars(&mut ctx, &values, &mut bound);
        }
        let value = self.username.run(&ctx, Step::Username, observer)?;
        let username = match value.downcast_ref::<CelString>() {
            Some(s) if s.inner().is_empty() => {
                return Err(format!(
                    "{} yielded an empty username",
                    self.username.describe()
                ));
            }
            Some(s) => s.inner().to_owned(),
            None => return Err(self.username.wrong_type("a string", value.as_ref())),
        };

        let groups = match &self.groups {
            None => Vec::new(),
            Some(compiled) => {
                if compiled.vars_whole {
                    bind_vars(&mut ctx, &values, &mut bound);
                }
                let value = compiled.run(&ctx, Step::Groups, observer)?;
                let items = match value.as_iterable() {
                    Some(items) if value.get_type().kind() == Kind::List => items,
                    _ => return Err(compiled.wrong_type("a list of strings", value.as_ref())),
                };
                let mut groups = Vec::new();
                let mut iter = items.iter();
                while let Some(item) = iter.next() {
                    let i = groups.len();
                    match item.downcast_ref::<CelString>() {
                        Some(s) if s.inner().is_empty() => {
                            return Err(format!(
                                "{} yielded an empty group at index {i}",
                                compiled.describe()
                            ));
                        }
                        Some(s) => groups.push(s.inner().to_owned()),
                        None => {
                            return Err(format!(
                                "{} must yield a list of strings, but item {i} is {}",
                                compiled.describe(),
                                type_name(item)
                            ));
                        }
                    }
                }
                groups
            }
        };

        Ok(Decision::Allow { username, groups })
    }
}

impl Compiled {
    /// Runs the expression, showing `observer` the outcome as `step`; an
    /// error denies, naming the expression. The result borrows from `ctx`
    /// where it can (a claim handed back as is).
    fn run<'e, 'v, O: Observer>(
        &'e self,
        ctx: &'e Context<'_, 'v>,
        step: Step,
        observer: &mut O,
    ) -> Result<CowVal<'e, 'v>, String> {
        let result = Value::resolve_val(self.program.expression(), ctx);
        observer.ran(step, result.as_deref());
        result.map_err(|e| format!("{} failed: {e}", self.describe()))
    }

    fn describe(&self) -> String {
        format!("{} `{}`", self.field, self.source)
    }

    fn wrong_type(&self, wanted: &str, got: &dyn Val) -> String {
        format!(
            "{} must yield {wanted}, got {}",
            self.describe(),
            type_name(got)
        )
    }
}

/// The environment every expression is compiled and run in: the standard
/// library, the strings extension for `split`, `lowerAscii` & co, and our
/// `matches`.
fn environment() -> Result<Env, String> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .and_then(|()| env.add_extension(regex::register))
        .map_err(|e| format!("internal error: cannot set up CEL: {e}"))?;
    Ok(env)
}

fn compile(env: &Env, field: String, source: &str, defined: &[&str]) -> Result<Compiled, String> {
    if source.trim().is_empty() {
        return Err(format!("{field}: the expression is empty"));
    }
    let program = env.compile(source).map_err(|errors| {
        let mut message = format!("{field}: `{source}` does not compile:");
        for (i, e) in errors.errors.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            let _ = write!(
                message,
                "{sep}at line {}, column {}: {}",
                e.pos.0, e.pos.1, e.msg
            );
        }
        message
    })?;
    let position = |offset: Option<u32>| {
        offset
            .map(|offset| {
                let (line, column) = line_column(source, offset);
                format!(" at line {line}, column {column}")
            })
            .unwrap_or_default()
    };
    let names = check::check_names(&program, defined).map_err(|problem| {
        format!(
            "{field}: `{source}`{}: {}",
            position(problem.offset),
            problem.message
        )
    })?;
    for literal in names.regexes {
        regex::precompile(&literal.pattern).map_err(|e| {
            format!(
                "{field}: `{source}`{}: `{}` is not a valid regex: {e}",
                position(literal.offset),
                literal.pattern
            )
        })?;
    }
    Ok(Compiled {
        field,
        source: source.to_owned(),
        program,
        vars_whole: names.vars_whole,
        claims: names.claims,
    })
}

/// 1-based line and column of a code-point offset, as the parser reports them.
fn line_column(source: &str, offset: u32) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for c in source.chars().take(offset as usize) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn check_variable_name(env: &Env, name: &str, earlier: &[&str]) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a valid name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    // CEL reserves some words (`in`, `true`, `null`, ...) but allows others
    // (`namespace`, `package`) as field names: ask the parser rather than
    // keep a list.
    if env.compile(&format!("{VARS}.{name}")).is_err() {
        return Err(format!(
            "`{name}` is a CEL keyword and cannot follow `{VARS}.`"
        ));
    }
    if earlier.contains(&name) {
        return Err(format!(
            "`{name}` is already defined by an earlier variable"
        ));
    }
    Ok(())
}

/// Binds `vars` to `values` unless it already holds exactly those (`bound`
/// is how many were bound last time).
fn bind_vars<'v>(
    ctx: &mut Context<'_, 'v>,
    values: &[(&str, Box<dyn Val + 'v>)],
    bound: &mut Option<usize>,
) {
    if *bound == Some(values.len()) {
        return;
    }
    let map: HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> = values
        .iter()
        .map(|(name, value)| (CelMapKey::from((*name).to_owned()), value.clone()))
        .collect();
    ctx.add_variable_as_val(VARS, Box::new(CelMap::from(map)));
    *bound = Some(values.len());
}

/// A value's CEL type for a message, with the start of a string's text.
fn type_name(value: &dyn Val) -> String {
    match value.downcast_ref::<CelString>() {
        Some(s) => format!("string {:?}", truncated(s.inner(), 64)),
        None => value.get_type().name().to_owned(),
    }
}

fn truncated(s: &str, max: usize) -> String {
    let mut s = s.to_owned();
    truncate(&mut s, max);
    s
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}
