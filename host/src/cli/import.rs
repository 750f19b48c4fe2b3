//! `gantry config import zot FILE` and `gantry config import kubernetes
//! FILE`: a zot configuration (JSON, or zot's YAML form), or a Kubernetes
//! `AuthenticationConfiguration`, as an equivalent Gantry TOML on stdout;
//! every key that could not be converted is listed on stderr by its path,
//! with why.
//!
//! The mapping is docs/workload-identity.md's *Migrating from zot* table.
//! Names: zot applies an explicit `claimMapping.username`/`groups` as is, so
//! an issuer with one gets `username_prefix`/`groups_prefix = ""` to keep
//! zot's names exactly (and a note saying so); without one, Gantry's default
//! prefix `<issuer>/` + `claims.sub` is zot's default `iss/sub` already.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value};

/// What an import produced: the TOML text and what was left behind.
pub struct Imported {
    pub toml: String,
    /// `key path: why`, for every key not converted.
    pub skipped: Vec<String>,
    /// Things the operator should know about what was converted.
    pub notes: Vec<String>,
}

/// Reads JSON, or YAML when the text is not JSON.
pub fn parse_document(text: &str) -> Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(json) => serde_yaml_ng::from_str(text)
            .map_err(|yaml| format!("neither JSON ({json}) nor YAML ({yaml})")),
    }
}

struct Walk {
    skipped: Vec<String>,
    notes: Vec<String>,
}

impl Walk {
    /// Reports every key left in `obj` under `path`.
    fn leftovers(&mut self, path: &str, obj: Map<String, Value>, why: &str) {
        for (k, _) in obj {
            self.skipped.push(format!("{path}.{k}: {why}"));
        }
    }
}

fn not_an_object() -> Imported {
    Imported {
        toml: String::new(),
        skipped: vec!["(document): not an object".into()],
        notes: Vec::new(),
    }
}

/// Converts each object of the array `list` (at `path`) with `convert`,
/// reporting what it leaves behind.
fn each_object(
    w: &mut Walk,
    list: Option<Value>,
    path: &str,
    convert: fn(&mut Walk, &str, &mut Map<String, Value>) -> toml::Value,
) -> Vec<toml::Value> {
    let Some(Value::Array(list)) = list else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in list.into_iter().enumerate() {
        let path = format!("{path}[{i}]");
        let Value::Object(mut o) = item else {
            w.skipped.push(format!("{path}: not an object"));
            continue;
        };
        out.push(convert(w, &path, &mut o));
        w.leftovers(&path, o, "no Gantry equivalent");
    }
    out
}

fn take_obj(obj: &mut Map<String, Value>, key: &str) -> Map<String, Value> {
    match obj.remove(key) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn take_str(obj: &mut Map<String, Value>, key: &str) -> Option<String> {
    match obj.remove(key)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn strings(v: Option<Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn json_to_toml(v: Value) -> toml::Value {
    match v {
        Value::Null => toml::Value::String(String::new()),
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::Number(n) => n
            .as_i64()
            .map(toml::Value::Integer)
            .or_else(|| n.as_f64().map(toml::Value::Float))
            .unwrap_or_else(|| toml::Value::String(n.to_string())),
        Value::String(s) => toml::Value::String(s),
        Value::Array(a) => toml::Value::Array(a.into_iter().map(json_to_toml).collect()),
        Value::Object(m) => {
            toml::Value::Table(m.into_iter().map(|(k, v)| (k, json_to_toml(v))).collect())
        }
    }
}

fn string_array(items: Vec<String>) -> toml::Value {
    toml::Value::Array(items.into_iter().map(toml::Value::String).collect())
}

/// Converts a zot configuration document.
pub fn zot(doc: Value) -> Imported {
    let mut w = Walk {
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    let mut root = match doc {
        Value::Object(m) => m,
        _ => return not_an_object(),
    };
    let mut out = toml::Table::new();
    root.remove("distSpecVersion");

    // storage
    let mut storage = take_obj(&mut root, "storage");
    if let Some(dir) = take_str(&mut storage, "rootDirectory") {
        let mut t = toml::Table::new();
        t.insert("root".into(), toml::Value::String(dir));
        out.insert("storage".into(), toml::Value::Table(t));
        w.notes.push(
            "storage.rootDirectory: the layouts differ; copy images with `skopeo sync`, not the directory".into(),
        );
    }
    w.leftovers("storage", storage, "no Gantry equivalent");

    // http
    let mut http = take_obj(&mut root, "http");
    let mut server = toml::Table::new();
    let address = take_str(&mut http, "address");
    let port = take_str(&mut http, "port");
    if address.is_some() || port.is_some() {
        let address = address.unwrap_or_else(|| "127.0.0.1".into());
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address
        };
        server.insert(
            "listen".into(),
            toml::Value::String(format!("{host}:{}", port.unwrap_or_else(|| "5000".into()))),
        );
    }
    let mut tls = take_obj(&mut http, "tls");
    if let Some(cert) = take_str(&mut tls, "cert") {
        server.insert("tls_cert_file".into(), toml::Value::String(cert));
    }
    if let Some(key) = take_str(&mut tls, "key") {
        server.insert("tls_key_file".into(), toml::Value::String(key));
    }
    w.leftovers("http.tls", tls, "no Gantry equivalent");
    if !server.is_empty() {
        out.insert("server".into(), toml::Value::Table(server));
    }

    let mut auth_in = take_obj(&mut http, "auth");
    let mut auth = toml::Table::new();
    let mut htpasswd = take_obj(&mut auth_in, "htpasswd");
    if let Some(path) = take_str(&mut htpasswd, "path") {
        auth.insert("htpasswd_file".into(), toml::Value::String(path));
        w.notes
            .push("http.auth.htpasswd: Gantry reads bcrypt entries only (htpasswd -B)".into());
    }
    w.leftovers("http.auth.htpasswd", htpasswd, "no Gantry equivalent");
    let mut bearer = take_obj(&mut auth_in, "bearer");
    if let Some(realm) = take_str(&mut bearer, "realm") {
        // The realm is always <public_url>/auth/token.
        let public = realm
            .trim_end_matches('/')
            .trim_end_matches("/auth/token")
            .trim_end_matches("/zot")
            .to_owned();
        auth.insert("public_url".into(), toml::Value::String(public));
        w.notes.push(format!(
            "http.auth.bearer.realm: Gantry's realm is <public_url>/auth/token, not {realm}"
        ));
    }
    if let Some(service) = take_str(&mut bearer, "service") {
        auth.insert("service".into(), toml::Value::String(service));
    }
    for key in ["cert", "upstreamTokenEndpoint"] {
        if bearer.remove(key).is_some() {
            w.skipped.push(format!(
                "http.auth.bearer.{key}: Gantry is its own token service ([auth.token] mints ES256 tokens)"
            ));
        }
    }
    let issuers = each_object(
        &mut w,
        bearer.remove("oidc"),
        "http.auth.bearer.oidc",
        zot_issuer,
    );
    w.leftovers("http.auth.bearer", bearer, "no Gantry equivalent");
    w.leftovers("http.auth", auth_in, "no Gantry equivalent");
    if !issuers.is_empty() {
        auth.insert("oidc".into(), toml::Value::Array(issuers));
    }

    let mut ac_in = take_obj(&mut http, "accessControl");
    let mut ac = toml::Table::new();
    let mut repos = toml::Table::new();
    for (pattern, rules) in take_obj(&mut ac_in, "repositories") {
        let path = format!("http.accessControl.repositories.{pattern:?}");
        let Value::Object(mut r) = rules else {
            w.skipped.push(format!("{path}: not an object"));
            continue;
        };
        let mut t = toml::Table::new();
        if let Some(Value::Array(policies)) = r.remove("policies") {
            let mut out_policies = Vec::new();
            for p in policies {
                let Value::Object(mut p) = p else { continue };
                let mut g = toml::Table::new();
                for key in ["users", "groups", "actions"] {
                    let v = strings(p.remove(key));
                    if !v.is_empty() {
                        g.insert(key.into(), string_array(v));
                    }
                }
                w.leftovers(&format!("{path}.policies[]"), p, "no Gantry equivalent");
                out_policies.push(toml::Value::Table(g));
            }
            t.insert("policies".into(), toml::Value::Array(out_policies));
        }
        for (zot_key, key) in [
            ("defaultPolicy", "default_policy"),
            ("anonymousPolicy", "anonymous_policy"),
        ] {
            if let Some(v) = r.remove(zot_key) {
                t.insert(key.into(), string_array(strings(Some(v))));
            }
        }
        w.leftovers(&path, r, "no Gantry equivalent");
        repos.insert(pattern, toml::Value::Table(t));
    }
    if !repos.is_empty() {
        ac.insert("repositories".into(), toml::Value::Table(repos));
    }
    let mut admin = take_obj(&mut ac_in, "adminPolicy");
    if !admin.is_empty() {
        let mut g = toml::Table::new();
        for key in ["users", "groups", "actions"] {
            let v = strings(admin.remove(key));
            if !v.is_empty() {
                g.insert(key.into(), string_array(v));
            }
        }
        w.leftovers(
            "http.accessControl.adminPolicy",
            admin,
            "no Gantry equivalent",
        );
        ac.insert("admin_policy".into(), toml::Value::Table(g));
    }
    if ac_in.remove("groups").is_some() {
        w.skipped.push(
            "http.accessControl.groups: no static group membership in Gantry; list the users in each policy, or let a claim policy return the groups".into(),
        );
    }
    w.leftovers("http.accessControl", ac_in, "no Gantry equivalent");
    w.leftovers("http", http, "no Gantry equivalent");

    // log
    let mut log_in = take_obj(&mut root, "log");
    if let Some(level) = take_str(&mut log_in, "level") {
        let mut t = toml::Table::new();
        t.insert("level".into(), toml::Value::String(level.to_lowercase()));
        out.insert("log".into(), toml::Value::Table(t));
    }
    w.leftovers("log", log_in, "no Gantry equivalent");
    w.leftovers("(top level)", root, "no Gantry equivalent");

    if !auth.is_empty() || !ac.is_empty() {
        out.insert("auth".into(), toml::Value::Table(auth));
    }
    if !ac.is_empty() {
        out.insert("access_control".into(), toml::Value::Table(ac));
    }
    Imported {
        toml: toml::to_string(&out).unwrap_or_default(),
        skipped: w.skipped,
        notes: w.notes,
    }
}

fn zot_issuer(w: &mut Walk, path: &str, o: &mut Map<String, Value>) -> toml::Value {
    let mut t = toml::Table::new();
    let issuer = take_str(o, "issuer").unwrap_or_default();
    t.insert("issuer".into(), toml::Value::String(issuer.clone()));
    t.insert(
        "audiences".into(),
        string_array(strings(o.remove("audiences"))),
    );
    if let Some(ca) = take_str(o, "certificateAuthorityFile") {
        t.insert("ca_file".into(), toml::Value::String(ca));
    }
    if o.remove("certificateAuthority").is_some() {
        w.skipped.push(format!(
            "{path}.certificateAuthority: inline PEM; write it to a file and set ca_file"
        ));
    }
    if o.remove("skipIssuerVerification").is_some() {
        w.skipped.push(format!(
            "{path}.skipIssuerVerification: verification is not optional in Gantry"
        ));
    }
    let mut mapping = take_obj(o, "claimMapping");
    let mut settings = toml::Table::new();
    for key in ["variables", "validations"] {
        if let Some(v) = mapping.remove(key) {
            settings.insert(key.into(), json_to_toml(v));
        }
    }
    for (key, prefix) in [("username", "username_prefix"), ("groups", "groups_prefix")] {
        if let Some(expr) = take_str(&mut mapping, key) {
            settings.insert(key.into(), toml::Value::String(expr));
            // zot applies an explicit mapping as is: keep its names.
            t.insert(prefix.into(), toml::Value::String(String::new()));
            w.notes.push(format!(
                "{path}.claimMapping.{key}: {prefix} = \"\" keeps zot's names exactly; choose a prefix unless names cannot collide (see docs/workload-identity.md)"
            ));
        }
    }
    w.leftovers(
        &format!("{path}.claimMapping"),
        mapping,
        "no Gantry equivalent",
    );
    if !settings.is_empty() {
        let mut policy = toml::Table::new();
        policy.insert("settings".into(), toml::Value::Table(settings));
        t.insert("policy".into(), toml::Value::Table(policy));
    }
    toml::Value::Table(t)
}

/// Prints an import: TOML on stdout, notes and skipped keys on stderr.
pub fn print(imported: &Imported, source: &Path) -> ExitCode {
    print!(
        "# Imported by `gantry config import` from {}\n{}",
        source.display(),
        imported.toml
    );
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    for s in &imported.skipped {
        eprintln!("not converted: {s}");
    }
    ExitCode::SUCCESS
}

/// `gantry config import zot FILE`.
pub fn run_zot(file: &Path) -> ExitCode {
    run(file, zot)
}

/// Reads `file`, converts it with `convert`, prints the result.
fn run(file: &Path, convert: fn(Value) -> Imported) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match parse_document(&text) {
        Ok(doc) => print(&convert(doc), file),
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// A CEL string literal of `s` (single-quoted, escaped).
fn cel_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `claims['name']`, which reads any claim name.
fn cel_claim(name: &str) -> String {
    format!("claims[{}]", cel_string(name))
}

fn validation(expression: String, message: String) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("expression".into(), toml::Value::String(expression));
    t.insert("message".into(), toml::Value::String(message));
    toml::Value::Table(t)
}

fn variable(name: &str, expression: String) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("name".into(), toml::Value::String(name.into()));
    t.insert("expression".into(), toml::Value::String(expression));
    toml::Value::Table(t)
}

/// Converts a Kubernetes `AuthenticationConfiguration`
/// (`apiserver.config.k8s.io/v1`): each `jwt[]` entry becomes an issuer
/// whose `builtin:cel` settings decide as the API server would. Names get
/// no Gantry prefix (`username_prefix = groups_prefix = ""`): the mapping's
/// own prefixes are the names' prefixes, as in the cluster.
pub fn kubernetes(doc: Value) -> Imported {
    let mut w = Walk {
        skipped: Vec::new(),
        notes: Vec::new(),
    };
    let Value::Object(mut root) = doc else {
        return not_an_object();
    };
    let kind = take_str(&mut root, "kind").unwrap_or_default();
    let api = take_str(&mut root, "apiVersion").unwrap_or_default();
    if kind != "AuthenticationConfiguration" || !api.starts_with("apiserver.config.k8s.io/") {
        w.notes.push(format!(
            "expected kind AuthenticationConfiguration of apiserver.config.k8s.io, found {kind:?} {api:?}"
        ));
    }
    let issuers = each_object(&mut w, root.remove("jwt"), "jwt", kubernetes_issuer);
    if root.remove("anonymous").is_some() {
        w.skipped.push(
            "anonymous: Gantry's anonymous access is access_control's anonymous_policy".into(),
        );
    }
    w.leftovers("(top level)", root, "no Gantry equivalent");
    let mut auth = toml::Table::new();
    auth.insert("oidc".into(), toml::Value::Array(issuers));
    let mut out = toml::Table::new();
    out.insert("auth".into(), toml::Value::Table(auth));
    Imported {
        toml: toml::to_string(&out).unwrap_or_default(),
        skipped: w.skipped,
        notes: w.notes,
    }
}

fn kubernetes_issuer(w: &mut Walk, path: &str, o: &mut Map<String, Value>) -> toml::Value {
    let mut t = toml::Table::new();
    let mut issuer = take_obj(o, "issuer");
    let url = take_str(&mut issuer, "url").unwrap_or_default();
    t.insert("issuer".into(), toml::Value::String(url));
    if let Some(d) = take_str(&mut issuer, "discoveryURL") {
        t.insert("discovery_url".into(), toml::Value::String(d));
    }
    t.insert(
        "audiences".into(),
        string_array(strings(issuer.remove("audiences"))),
    );
    // MatchAny is Gantry's rule: the token's aud must contain one of them.
    if let Some(policy) = take_str(&mut issuer, "audienceMatchPolicy")
        && policy != "MatchAny"
    {
        w.skipped.push(format!(
            "{path}.issuer.audienceMatchPolicy: {policy:?}; Gantry matches any audience"
        ));
    }
    if issuer.remove("certificateAuthority").is_some() {
        w.skipped.push(format!(
            "{path}.issuer.certificateAuthority: inline PEM; write it to a file and set ca_file"
        ));
    }
    w.leftovers(&format!("{path}.issuer"), issuer, "no Gantry equivalent");
    t.insert("username_prefix".into(), toml::Value::String(String::new()));
    t.insert("groups_prefix".into(), toml::Value::String(String::new()));

    let mut validations = Vec::new();
    if let Some(Value::Array(rules)) = o.remove("claimValidationRules") {
        for (i, rule) in rules.into_iter().enumerate() {
            let Value::Object(mut r) = rule else { continue };
            let rpath = format!("{path}.claimValidationRules[{i}]");
            match (
                take_str(&mut r, "claim"),
                take_str(&mut r, "requiredValue"),
                take_str(&mut r, "expression"),
            ) {
                (Some(claim), value, None) => {
                    let value = value.unwrap_or_default();
                    validations.push(validation(
                        format!("{} == {}", cel_claim(&claim), cel_string(&value)),
                        format!("claim {claim} must be {value:?}"),
                    ));
                }
                (None, None, Some(expr)) => {
                    let message = take_str(&mut r, "message")
                        .unwrap_or_else(|| format!("claim validation failed: {expr}"));
                    validations.push(validation(expr, message));
                }
                _ => w
                    .skipped
                    .push(format!("{rpath}: needs claim+requiredValue or expression")),
            }
            w.leftovers(&rpath, r, "no Gantry equivalent");
        }
    }

    let mut mappings = take_obj(o, "claimMappings");
    let mut username = take_obj(&mut mappings, "username");
    let username_expr = match (
        take_str(&mut username, "expression"),
        take_str(&mut username, "claim"),
    ) {
        (Some(expr), _) => expr,
        (None, Some(claim)) => {
            if claim == "email" {
                // The API server requires email_verified when it is present.
                validations.push(validation(
                    "!('email_verified' in claims) || claims.email_verified == true".into(),
                    "email_verified must be true".into(),
                ));
            }
            let prefix = take_str(&mut username, "prefix").unwrap_or_default();
            if prefix.is_empty() {
                cel_claim(&claim)
            } else {
                format!("{} + {}", cel_string(&prefix), cel_claim(&claim))
            }
        }
        (None, None) => cel_claim("sub"),
    };
    w.leftovers(
        &format!("{path}.claimMappings.username"),
        username,
        "no Gantry equivalent",
    );
    let mut groups = take_obj(&mut mappings, "groups");
    let groups_expr = match (
        take_str(&mut groups, "expression"),
        take_str(&mut groups, "claim"),
    ) {
        (Some(expr), _) => Some(expr),
        (None, Some(claim)) => {
            let prefix = take_str(&mut groups, "prefix").unwrap_or_default();
            Some(format!(
                "{q} in claims ? {c}.map(g, {p} + g) : []",
                q = cel_string(&claim),
                c = cel_claim(&claim),
                p = cel_string(&prefix)
            ))
        }
        (None, None) => None,
    };
    w.leftovers(
        &format!("{path}.claimMappings.groups"),
        groups,
        "no Gantry equivalent",
    );
    for key in ["uid", "extra"] {
        if mappings.remove(key).is_some() {
            w.skipped.push(format!(
                "{path}.claimMappings.{key}: a Gantry identity is a username and groups"
            ));
        }
    }
    w.leftovers(
        &format!("{path}.claimMappings"),
        mappings,
        "no Gantry equivalent",
    );

    // userValidationRules see the mapped user: compute it once as variables.
    let mut variables = vec![variable("user_name", username_expr)];
    if let Some(g) = groups_expr {
        variables.push(variable("user_groups", g));
    } else {
        variables.push(variable("user_groups", "[]".into()));
    }
    if let Some(Value::Array(rules)) = o.remove("userValidationRules") {
        for (i, rule) in rules.into_iter().enumerate() {
            let Value::Object(mut r) = rule else { continue };
            let rpath = format!("{path}.userValidationRules[{i}]");
            if let Some(expr) = take_str(&mut r, "expression") {
                let expr = expr
                    .replace("user.username", "vars.user_name")
                    .replace("user.groups", "vars.user_groups");
                let message = take_str(&mut r, "message")
                    .unwrap_or_else(|| format!("user validation failed: {expr}"));
                validations.push(validation(expr, message));
            }
            w.leftovers(&rpath, r, "no Gantry equivalent");
        }
    }
    let mut settings = toml::Table::new();
    settings.insert("variables".into(), toml::Value::Array(variables));
    settings.insert("validations".into(), toml::Value::Array(validations));
    settings.insert(
        "username".into(),
        toml::Value::String("vars.user_name".into()),
    );
    settings.insert(
        "groups".into(),
        toml::Value::String("vars.user_groups".into()),
    );
    let mut policy = toml::Table::new();
    policy.insert("settings".into(), toml::Value::Table(settings));
    t.insert("policy".into(), toml::Value::Table(policy));
    toml::Value::Table(t)
}

/// `gantry config import kubernetes FILE`.
pub fn run_kubernetes(file: &Path) -> ExitCode {
    run(file, kubernetes)
}
