//! Running the shop scaled out: `emporium deploy nginx` writes the load
//! balancer's configuration, generated from the services' route tables
//! (`auth::ROUTES`, `catalog::ROUTES`, …) so the route map cannot drift
//! from the routers; `emporium health` asks a process whether it is ready
//! (a container's health check: the image has no curl).
//!
//! The map: every service route goes to its role's upstream; whatever no
//! service claims (pages, `/assets`, `/`) goes to `web`. Overlapping paths
//! (`/api/v1/me` → auth, `/api/v1/me/recommendations` → search) are told
//! apart by exact and regex locations; a subtree that belongs to one role
//! whole is one `^~` prefix. The public server refuses `/internal/` and
//! `/metrics`; the internal server serves `/internal/…` and the token keys
//! and nothing else.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use kernel::config::{Config, ROLES, WEB};
use platform::routes::{BodyLimit, Reach, Route, UPLOAD_FRAMING_BYTES};

/// Every service's route table, by role, in start-up order.
pub fn route_tables() -> Vec<(&'static str, &'static [Route])> {
    vec![
        (auth::NAME, auth::ROUTES),
        (catalog::NAME, catalog::ROUTES),
        (orders::NAME, orders::ROUTES),
        (search::NAME, search::ROUTES),
        (notify::NAME, notify::ROUTES),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("`--upstream {0}`: use ROLE=HOST:PORT[,HOST:PORT…], e.g. `catalog=10.0.0.5:8080,10.0.0.6:8080`")]
    UpstreamShape(String),
    #[error("`--upstream {given}`: unknown role `{role}`; known: {}", ROLES.join(", "))]
    UnknownRole { given: String, role: String },
    #[error("`{option} {value}`: {message}")]
    Option { option: &'static str, value: String, message: String },
    #[error("route table of {role}: `{path}`: {message}")]
    Route { role: &'static str, path: &'static str, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{url}: {message}")]
    Health { url: String, message: String },
}

/// The options of `emporium deploy nginx`.
#[derive(Debug, Clone, clap::Args)]
pub struct NginxArgs {
    /// Write the configuration to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The public server's address: `HOST:PORT`, or a port.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// The internal server's address (`/internal/…` and the token keys, for
    /// calls between processes): keep it off the public network.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub internal_listen: String,
    /// The processes of a role: `ROLE=HOST:PORT[,HOST:PORT…]` (repeatable;
    /// roles: auth, catalog, orders, search, notify, web). A role not named
    /// gets one local process: auth 127.0.0.1:8101, catalog :8102, orders
    /// :8103, search :8104, notify :8105, web :8106.
    #[arg(long = "upstream", value_name = "ROLE=ADDRS")]
    pub upstreams: Vec<String>,
    /// The public server's `server_name`.
    #[arg(long, default_value = "_")]
    pub server_name: String,
    /// Where nginx keeps its temporary files (and its pid file and logs
    /// unless said otherwise); default: nginx's prefix (`nginx -p DIR`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The pid file [default: RUN_DIR/nginx.pid].
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Where `nginx-error.log` and `nginx-access.log` go [default: RUN_DIR].
    #[arg(long, conflicts_with = "log_stderr")]
    pub log_dir: Option<PathBuf>,
    /// The error log to standard error and the access log to standard
    /// output (in a container).
    #[arg(long)]
    pub log_stderr: bool,
    /// A DNS server (`127.0.0.11` in Docker): upstream host names are looked
    /// up again while nginx runs, so replicas that come and go are followed.
    /// Needs nginx 1.27.3 or later.
    #[arg(long)]
    pub resolver: Option<String>,
    /// Connections each nginx worker holds at once.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(64..=1_000_000))]
    pub worker_connections: u32,
}

/// What the configuration is made from: the command's options and the
/// shop's settings it must agree with.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub listen: String,
    pub internal_listen: String,
    pub server_name: String,
    /// Every role, with its processes.
    pub upstreams: BTreeMap<&'static str, Vec<String>>,
    pub run_dir: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub log_stderr: bool,
    pub resolver: Option<String>,
    pub worker_connections: u32,
    /// `http.body_limit_bytes`.
    pub body_limit_bytes: usize,
    /// `media.max_upload_bytes`.
    pub max_upload_bytes: usize,
    /// `http.request_timeout_secs`: nginx waits a little longer, so the
    /// process's own 503 reaches the client.
    pub request_timeout_secs: u64,
    /// `http.header_timeout_secs`: the processes close idle connections
    /// after it, so nginx stops reusing them well before.
    pub header_timeout_secs: u64,
    /// `http.body_timeout_secs`.
    pub body_timeout_secs: u64,
}

/// The local address a role gets when `--upstream` does not name it.
pub fn default_upstream(role: &str) -> String {
    let n = ROLES.iter().position(|r| *r == role).unwrap_or(ROLES.len());
    format!("127.0.0.1:{}", 8101 + n)
}

impl Nginx {
    /// From the command's options and the shop's configuration.
    pub fn from_args(args: &NginxArgs, config: &Config) -> Result<Nginx, DeployError> {
        let mut upstreams: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for given in &args.upstreams {
            let (role, addrs) = given.split_once('=').ok_or_else(|| DeployError::UpstreamShape(given.clone()))?;
            let role = ROLES
                .iter()
                .find(|r| **r == role.trim())
                .ok_or_else(|| DeployError::UnknownRole { given: given.clone(), role: role.trim().to_owned() })?;
            let servers = upstreams.entry(role).or_default();
            for addr in addrs.split(',').map(str::trim) {
                check_address("--upstream", addr, false)?;
                servers.push(addr.to_owned());
            }
        }
        for role in ROLES {
            upstreams.entry(role).or_insert_with(|| vec![default_upstream(role)]);
        }
        check_address("--listen", &args.listen, true)?;
        check_address("--internal-listen", &args.internal_listen, true)?;
        if args.listen == args.internal_listen {
            return Err(DeployError::Option {
                option: "--internal-listen",
                value: args.internal_listen.clone(),
                message: "is also `--listen`: the internal server needs an address of its own".into(),
            });
        }
        if args.server_name.is_empty() || !args.server_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b)) {
            return Err(DeployError::Option { option: "--server-name", value: args.server_name.clone(), message: "is not a host name (letters, digits, `.`, `-`, `*`), or `_`".into() });
        }
        if let Some(resolver) = &args.resolver {
            let with_port = if resolver.contains(':') && !resolver.starts_with('[') && resolver.matches(':').count() > 1 { format!("[{resolver}]:53") } else if resolver.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) { resolver.clone() } else { format!("{resolver}:53") };
            check_address("--resolver", &with_port, false)?;
        }
        for (option, path) in [("--run-dir", &args.run_dir), ("--pid-file", &args.pid_file), ("--log-dir", &args.log_dir)] {
            if let Some(path) = path {
                check_path(option, path)?;
            }
        }
        Ok(Nginx {
            listen: args.listen.clone(),
            internal_listen: args.internal_listen.clone(),
            server_name: args.server_name.clone(),
            upstreams,
            run_dir: args.run_dir.clone(),
            pid_file: args.pid_file.clone(),
            log_dir: args.log_dir.clone(),
            log_stderr: args.log_stderr,
            resolver: args.resolver.clone(),
            worker_connections: args.worker_connections,
            body_limit_bytes: config.http.body_limit_bytes,
            max_upload_bytes: config.media.max_upload_bytes,
            request_timeout_secs: config.http.request_timeout_secs,
            header_timeout_secs: config.http.header_timeout_secs,
            body_timeout_secs: config.http.body_timeout_secs,
        })
    }
}

/// `HOST:PORT` (or a bare port where `port_alone`), with nothing in it that
/// could end a directive.
fn check_address(option: &'static str, value: &str, port_alone: bool) -> Result<(), DeployError> {
    let bad = |message: &str| DeployError::Option { option, value: value.to_owned(), message: message.into() };
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (Some(host), port),
        None if port_alone => (None, value),
        None => return Err(bad("use HOST:PORT, e.g. `10.0.0.5:8080`")),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("the port is not a number from 1 to 65535")),
    }
    if let Some(host) = host {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)) {
            return Err(bad("the host is not an IP address or a host name"));
        }
        if bare.contains(':') && !host.starts_with('[') {
            return Err(bad("write an IPv6 address in brackets: `[::1]:8080`"));
        }
    }
    Ok(())
}

/// A path nginx can take as it is (no spaces, quotes or `;`).
fn check_path(option: &'static str, path: &std::path::Path) -> Result<(), DeployError> {
    let text = path.to_string_lossy();
    if text.is_empty() || text.bytes().any(|b| b.is_ascii_whitespace() || b"\"';{}$\\".contains(&b) || b.is_ascii_control()) {
        return Err(DeployError::Option { option, value: text.into_owned(), message: "use a path without spaces, quotes, `$`, `;` or braces".into() });
    }
    Ok(())
}

/// One server of the load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Public,
    Internal,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// To the processes of this role.
    Role(&'static str),
    /// Answered by nginx itself with this status.
    Refused(u16),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Lit(&'static str),
    Param,
    Rest,
}

fn segments(path: &'static str) -> Result<Vec<Seg>, String> {
    let rest = path.strip_prefix('/').ok_or("does not start with `/`")?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&'static str> = rest.split('/').collect();
    let mut segs = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let seg = if part.starts_with("{*") && part.ends_with('}') {
            if i + 1 != parts.len() {
                return Err("`{*…}` must be the last segment".into());
            }
            Seg::Rest
        } else if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
            Seg::Param
        } else if !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)) {
            Seg::Lit(part)
        } else {
            return Err(format!("segment `{part}` is neither a name (letters, digits, `-._~`) nor a whole `{{param}}`"));
        };
        segs.push(seg);
    }
    Ok(segs)
}

/// How a location matches, as nginx orders them: exact first, then the
/// longest prefix (a `^~` one ends the search), then regexes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Match {
    Exact(String),
    Prefix { path: String, stop: bool },
    /// The route's segments; written as an anchored regex.
    Pattern(Vec<Seg>),
}

#[derive(Debug, Clone)]
struct Location {
    matcher: Match,
    target: Target,
    body: BodyLimit,
    /// The route it stands for, for the reader.
    route: Option<&'static str>,
}

/// Who owns a route: its role and its body limit (a subtree is one prefix
/// only when both are the same throughout).
type Owner = (&'static str, BodyLimit);

#[derive(Default)]
struct Node {
    route: Option<(Owner, &'static str)>,
    children: BTreeMap<&'static str, Node>,
    /// Routes with a parameter at this depth or below.
    patterns: Vec<(Vec<Seg>, Owner, &'static str)>,
}

impl Node {
    fn owners(&self, out: &mut Vec<Owner>) {
        out.extend(self.route.iter().map(|(o, _)| *o));
        out.extend(self.patterns.iter().map(|(_, o, _)| *o));
        for child in self.children.values() {
            child.owners(out);
        }
    }

    /// The one owner of everything under here, if there is one.
    fn sole_owner(&self) -> Option<Owner> {
        let mut owners = Vec::new();
        self.owners(&mut owners);
        let first = *owners.first()?;
        owners.iter().all(|o| *o == first).then_some(first)
    }

    fn has_children(&self) -> bool {
        !self.children.is_empty() || !self.patterns.is_empty()
    }
}

/// The locations of one server: the routes that reach it, as few prefixes
/// as stay exact where `collapse`, each route on its own otherwise.
fn locations(tables: &[(&'static str, &'static [Route])], server: Server, collapse: bool) -> Result<Vec<Location>, DeployError> {
    let mut root = Node::default();
    let mut seen: BTreeMap<Vec<Seg>, (&'static str, &'static str)> = BTreeMap::new();
    for (role, routes) in tables {
        for route in *routes {
            let err = |message: String| DeployError::Route { role, path: route.path, message };
            let segs = segments(route.path).map_err(err)?;
            let internal_path = route.path.starts_with("/internal/");
            match route.reach {
                Reach::Internal if !internal_path => return Err(err("an internal route must be under /internal/".into())),
                Reach::Public | Reach::Both if internal_path => return Err(err("a route under /internal/ must be internal".into())),
                _ => {}
            }
            if let Some((other_role, other)) = seen.insert(segs.clone(), (role, route.path)) {
                return Err(err(format!("is the same route as `{other}` of {other_role}")));
            }
            let on_server = match server {
                Server::Public => route.reach != Reach::Internal,
                Server::Internal => route.reach != Reach::Public,
            };
            if !on_server {
                continue;
            }
            let owner = (*role, route.body);
            let mut node = &mut root;
            let mut placed = false;
            for seg in &segs {
                match seg {
                    Seg::Lit(name) => node = node.children.entry(name).or_default(),
                    Seg::Param | Seg::Rest => {
                        node.patterns.push((segs.clone(), owner, route.path));
                        placed = true;
                        break;
                    }
                }
            }
            if !placed {
                node.route = Some((owner, route.path));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root, String::new(), collapse, &mut out);
    // Regexes are tried in order: at the first place two routes differ, a
    // name before a parameter, a parameter before the rest of the path
    // (as the routers choose).
    let key = |segs: &Vec<Seg>| segs.iter().map(|s| match s { Seg::Lit(_) => 0u8, Seg::Param => 1, Seg::Rest => 2 }).collect::<Vec<u8>>();
    out.sort_by(|a, b| match (&a.matcher, &b.matcher) {
        (Match::Pattern(x), Match::Pattern(y)) => key(x).cmp(&key(y)).then_with(|| a.route.cmp(&b.route)),
        (Match::Pattern(_), _) => std::cmp::Ordering::Greater,
        (_, Match::Pattern(_)) => std::cmp::Ordering::Less,
        (x, y) => sort_path(x).cmp(sort_path(y)),
    });
    Ok(out)
}

fn sort_path(m: &Match) -> &str {
    match m {
        Match::Exact(p) | Match::Prefix { path: p, .. } => p,
        Match::Pattern(_) => "",
    }
}

fn walk(node: &Node, prefix: String, collapse: bool, out: &mut Vec<Location>) {
    let to = |owner: Owner| (Target::Role(owner.0), owner.1);
    if let Some((owner, route)) = node.route {
        let (target, body) = to(owner);
        let path = if prefix.is_empty() { "/".to_owned() } else { prefix.clone() };
        out.push(Location { matcher: Match::Exact(path), target, body, route: Some(route) });
    }
    for (name, child) in &node.children {
        let path = format!("{prefix}/{name}");
        match child.sole_owner() {
            Some(owner) if collapse && child.has_children() => {
                if let Some((owner, route)) = child.route {
                    let (target, body) = to(owner);
                    out.push(Location { matcher: Match::Exact(path.clone()), target, body, route: Some(route) });
                }
                let (target, body) = to(owner);
                out.push(Location { matcher: Match::Prefix { path: format!("{path}/"), stop: true }, target, body, route: None });
            }
            _ => walk(child, path, collapse, out),
        }
    }
    for (segs, owner, route) in &node.patterns {
        let (target, body) = to(*owner);
        out.push(Location { matcher: Match::Pattern(segs.clone()), target, body, route: Some(route) });
    }
}

/// Whether `path` fits a route's segments (as its regex does).
fn fits(segs: &[Seg], path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    if segs.is_empty() {
        return rest.is_empty();
    }
    let parts: Vec<&str> = rest.split('/').collect();
    for (i, seg) in segs.iter().enumerate() {
        match seg {
            Seg::Rest => return parts.len() > i && !parts[i..].join("/").is_empty(),
            Seg::Lit(name) => {
                if parts.get(i) != Some(name) {
                    return false;
                }
            }
            Seg::Param => {
                if parts.get(i).is_none_or(|p| p.is_empty()) {
                    return false;
                }
            }
        }
    }
    parts.len() == segs.len()
}

/// The anchored regex of a route: names as they are, a parameter one
/// segment, the rest of the path one or more characters.
fn regex(segs: &[Seg]) -> String {
    let mut out = String::from("^");
    for seg in segs {
        out.push('/');
        match seg {
            Seg::Lit(name) => {
                out.push_str(&name.replace('.', "\\."));
            }
            Seg::Param => out.push_str("[^/]+"),
            Seg::Rest => out.push_str(".+"),
        }
    }
    if segs.is_empty() {
        out.push('/');
    }
    out.push('$');
    out
}

/// The route map of both servers, as written into the configuration.
pub struct RouteMap {
    public: Vec<Location>,
    internal: Vec<Location>,
}

impl RouteMap {
    /// From the services' route tables (see [`route_tables`]).
    pub fn new(tables: &[(&'static str, &'static [Route])]) -> Result<RouteMap, DeployError> {
        let mut public = locations(tables, Server::Public, true)?;
        // Never from outside: calls between processes, and the metrics.
        public.push(Location { matcher: Match::Prefix { path: "/internal/".into(), stop: true }, target: Target::Refused(404), body: BodyLimit::Default, route: None });
        public.push(Location { matcher: Match::Exact("/metrics".into()), target: Target::Refused(404), body: BodyLimit::Default, route: None });
        // The pages, their assets, and whatever no service claims.
        public.push(Location { matcher: Match::Prefix { path: "/".into(), stop: false }, target: Target::Role(WEB), body: BodyLimit::Default, route: None });
        let mut internal = locations(tables, Server::Internal, false)?;
        internal.push(Location { matcher: Match::Prefix { path: "/".into(), stop: false }, target: Target::Refused(404), body: BodyLimit::Default, route: None });
        Ok(RouteMap { public, internal })
    }

    /// Where nginx sends a request for `path` (decoded, without its query)
    /// on `server`: its rules for choosing a location, applied to ours.
    pub fn resolve(&self, server: Server, path: &str) -> Target {
        let locations = match server {
            Server::Public => &self.public,
            Server::Internal => &self.internal,
        };
        if let Some(l) = locations.iter().find(|l| matches!(&l.matcher, Match::Exact(p) if p == path)) {
            return l.target;
        }
        let longest = locations
            .iter()
            .filter_map(|l| match &l.matcher {
                Match::Prefix { path: p, stop } if path.starts_with(p.as_str()) => Some((p.len(), *stop, l.target)),
                _ => None,
            })
            .max_by_key(|(len, _, _)| *len);
        if let Some((_, true, target)) = longest {
            return target;
        }
        if let Some(l) = locations.iter().find(|l| matches!(&l.matcher, Match::Pattern(segs) if fits(segs, path))) {
            return l.target;
        }
        longest.map(|(_, _, t)| t).unwrap_or(Target::Refused(404))
    }

    /// The largest body nginx lets through for `path` on the public server.
    pub fn body_limit(&self, path: &str) -> BodyLimit {
        let l = &self.public;
        l.iter()
            .find(|l| matches!(&l.matcher, Match::Exact(p) if p == path))
            .or_else(|| l.iter().find(|l| matches!(&l.matcher, Match::Pattern(segs) if fits(segs, path))))
            .map(|l| l.body)
            .unwrap_or(BodyLimit::Default)
    }
}

/// The whole `nginx.conf`.
pub fn render(nginx: &Nginx, map: &RouteMap) -> String {
    let file = |dir: &Option<PathBuf>, name: &str| match dir {
        Some(d) => d.join(name).display().to_string(),
        None => name.to_owned(),
    };
    let log_dir = nginx.log_dir.clone().or_else(|| nginx.run_dir.clone());
    let pid = nginx.pid_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| file(&nginx.run_dir, "nginx.pid"));
    let (error_log, access_log) = if nginx.log_stderr {
        ("stderr".to_owned(), "/dev/stdout".to_owned())
    } else {
        (file(&log_dir, "nginx-error.log"), file(&log_dir, "nginx-access.log"))
    };
    let upload = nginx.max_upload_bytes + UPLOAD_FRAMING_BYTES;
    let idle = (nginx.header_timeout_secs / 2).max(1);
    let mut c = String::new();
    let _ = writeln!(c, "# The load balancer of a scaled-out Emporium, written by `emporium deploy nginx`");
    let _ = writeln!(c, "# from the services' route tables: generate it again after an upgrade rather");
    let _ = writeln!(c, "# than edit it. Start: nginx -c THIS_FILE -p RUN_DIR (-e ERROR_LOG).");
    let _ = writeln!(c, "worker_processes auto;");
    let _ = writeln!(c, "pid {pid};");
    let _ = writeln!(c, "error_log {error_log} warn;");
    let _ = writeln!(c);
    let _ = writeln!(c, "events {{\n    worker_connections {};\n}}", nginx.worker_connections);
    let _ = writeln!(c);
    let _ = writeln!(c, "http {{");
    for (directive, name) in [
        ("client_body_temp_path", "client_body_temp"),
        ("proxy_temp_path", "proxy_temp"),
        ("fastcgi_temp_path", "fastcgi_temp"),
        ("uwsgi_temp_path", "uwsgi_temp"),
        ("scgi_temp_path", "scgi_temp"),
    ] {
        let _ = writeln!(c, "    {directive} {};", file(&nginx.run_dir, name));
    }
    let _ = writeln!(c, "    server_tokens off;");
    let _ = writeln!(c, "    keepalive_timeout 65s;");
    let _ = writeln!(c, "    client_header_timeout {}s;", nginx.header_timeout_secs);
    let _ = writeln!(c, "    client_body_timeout {}s;", nginx.body_timeout_secs);
    let _ = writeln!(c, "    # http.body_limit_bytes; routes that take more say so below.");
    let _ = writeln!(c, "    client_max_body_size {};", nginx.body_limit_bytes);
    let _ = writeln!(c);
    let _ = writeln!(c, "    # The client's request id when it is one the processes keep, else a new one.");
    let _ = writeln!(c, "    map $http_x_request_id $emporium_request_id {{");
    let _ = writeln!(c, "        \"~^[A-Za-z0-9._:-]{{1,128}}$\" $http_x_request_id;");
    let _ = writeln!(c, "        default $request_id;");
    let _ = writeln!(c, "    }}");
    let _ = writeln!(c, "    log_format emporium '$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent '");
    let _ = writeln!(c, "                        '$request_time upstream=$upstream_addr/$upstream_status request_id=$emporium_request_id';");
    let _ = writeln!(c, "    access_log {access_log} emporium;");
    if let Some(resolver) = &nginx.resolver {
        let _ = writeln!(c, "    resolver {resolver} valid=10s;");
    }
    let _ = writeln!(c);
    let _ = writeln!(c, "    # To the processes: kept-alive connections, the client as the processes");
    let _ = writeln!(c, "    # find it (the right-most X-Forwarded-For hop that is not a trusted proxy).");
    let _ = writeln!(c, "    proxy_http_version 1.1;");
    let _ = writeln!(c, "    proxy_set_header Connection \"\";");
    let _ = writeln!(c, "    proxy_set_header Host $host;");
    let _ = writeln!(c, "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;");
    let _ = writeln!(c, "    proxy_set_header X-Forwarded-Proto $scheme;");
    let _ = writeln!(c, "    proxy_set_header X-Request-Id $emporium_request_id;");
    let _ = writeln!(c, "    proxy_connect_timeout 3s;");
    let _ = writeln!(c, "    proxy_send_timeout {}s;", nginx.body_timeout_secs.max(1));
    let _ = writeln!(c, "    proxy_read_timeout {}s;", nginx.request_timeout_secs + 5);
    let _ = writeln!(c, "    # Passive health: a process that fails is skipped for a while. Only");
    let _ = writeln!(c, "    # idempotent requests go to another process (POST and PATCH never do).");
    let _ = writeln!(c, "    proxy_next_upstream error timeout http_502 http_503;");
    let _ = writeln!(c, "    proxy_next_upstream_tries 2;");
    let _ = writeln!(c, "    proxy_next_upstream_timeout 10s;");
    for (role, servers) in &nginx.upstreams {
        let _ = writeln!(c);
        let _ = writeln!(c, "    upstream emporium_{role} {{");
        let _ = writeln!(c, "        zone emporium_{role} 64k;");
        for server in servers {
            let resolve = if nginx.resolver.is_some() { " resolve" } else { "" };
            let _ = writeln!(c, "        server {server} max_fails=3 fail_timeout=10s{resolve};");
        }
        let _ = writeln!(c, "        keepalive 32;");
        let _ = writeln!(c, "        keepalive_timeout {idle}s;");
        let _ = writeln!(c, "    }}");
    }
    let location = |c: &mut String, l: &Location| {
        let head = match &l.matcher {
            Match::Exact(p) => format!("= {p}"),
            Match::Prefix { path, stop: true } => format!("^~ {path}"),
            Match::Prefix { path, stop: false } => path.clone(),
            Match::Pattern(segs) => format!("~ \"{}\"", regex(segs)),
        };
        let note = match (&l.matcher, l.route) {
            (Match::Pattern(_), Some(route)) => format!("  # {route}"),
            _ => String::new(),
        };
        let body = match l.body {
            BodyLimit::Default => String::new(),
            BodyLimit::Upload => format!("client_max_body_size {upload}; "),
            BodyLimit::Bytes(n) => format!("client_max_body_size {n}; "),
        };
        let action = match l.target {
            Target::Role(role) => format!("proxy_pass http://emporium_{role};"),
            Target::Refused(status) => format!("return {status};"),
        };
        let _ = writeln!(c, "        location {head} {{ {body}{action} }}{note}");
    };
    let _ = writeln!(c);
    let _ = writeln!(c, "    # Shoppers, staff and API clients.");
    let _ = writeln!(c, "    server {{");
    let _ = writeln!(c, "        listen {};", nginx.listen);
    let _ = writeln!(c, "        server_name {};", nginx.server_name);
    for l in &map.public {
        location(&mut c, l);
    }
    let _ = writeln!(c, "    }}");
    let _ = writeln!(c);
    let _ = writeln!(c, "    # Calls between processes (catalog.url, auth.url): /internal/… and the");
    let _ = writeln!(c, "    # token keys, nothing else. Keep it off the public network.");
    let _ = writeln!(c, "    server {{");
    let _ = writeln!(c, "        listen {};", nginx.internal_listen);
    let _ = writeln!(c, "        server_name _;");
    for l in &map.internal {
        location(&mut c, l);
    }
    let _ = writeln!(c, "    }}");
    let _ = writeln!(c, "}}");
    c
}

/// `emporium deploy nginx`: the configuration, to `--out` or standard output.
pub fn nginx(args: &NginxArgs, config: &Config, stdout: &mut dyn std::io::Write) -> Result<(), DeployError> {
    let options = Nginx::from_args(args, config)?;
    let map = RouteMap::new(&route_tables())?;
    let text = render(&options, &map);
    match &args.out {
        Some(path) => std::fs::write(path, text).map_err(|source| DeployError::Write { path: path.clone(), source }),
        None => stdout.write_all(text.as_bytes()).map_err(|source| DeployError::Write { path: "standard output".into(), source }),
    }
}

/// The readiness URL of the process `bind` describes: the same port on
/// this machine's loopback when it listens on every address.
pub fn ready_url(bind: std::net::SocketAddr) -> String {
    let ip = match bind.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/readyz", std::net::SocketAddr::new(ip, bind.port()))
}

/// `emporium health`: `Ok` when `url` answers 2xx within 5 seconds.
pub async fn health(url: &str) -> Result<(), DeployError> {
    let failed = |message: String| DeployError::Health { url: url.to_owned(), message };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let response = client.get(url).send().await.map_err(|e| failed(format!("no answer: {e}")))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        Err(failed(format!("answered {status}: {body}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> RouteMap {
        RouteMap::new(&route_tables()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A path a route answers: each parameter a value, the rest two segments.
    fn sample(path: &str) -> String {
        path.split('/')
            .map(|s| if s.starts_with("{*") { "a/b.jpg" } else if s.starts_with('{') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_route_goes_to_its_service_on_the_servers_it_is_for() {
        let map = map();
        for (role, routes) in route_tables() {
            for route in routes {
                let path = sample(route.path);
                let public = map.resolve(Server::Public, &path);
                let internal = map.resolve(Server::Internal, &path);
                match route.reach {
                    Reach::Public => {
                        assert_eq!(public, Target::Role(role), "{path}");
                        assert_eq!(internal, Target::Refused(404), "{path}");
                    }
                    Reach::Internal => {
                        assert_eq!(public, Target::Refused(404), "{path}");
                        assert_eq!(internal, Target::Role(role), "{path}");
                    }
                    Reach::Both => {
                        assert_eq!(public, Target::Role(role), "{path}");
                        assert_eq!(internal, Target::Role(role), "{path}");
                    }
                }
            }
        }
    }

    #[test]
    fn overlapping_paths_are_told_apart() {
        let map = map();
        let public = |p: &str| map.resolve(Server::Public, p);
        assert_eq!(public("/api/v1/me"), Target::Role("auth"));
        assert_eq!(public("/api/v1/me/addresses/adr_1"), Target::Role("auth"));
        assert_eq!(public("/api/v1/me/recommendations"), Target::Role("search"));
        assert_eq!(public("/api/v1/me/notification-preferences"), Target::Role("notify"));
        assert_eq!(public("/api/v1/products"), Target::Role("catalog"));
        assert_eq!(public("/api/v1/products/lamp"), Target::Role("catalog"));
        assert_eq!(public("/api/v1/products/prd_1/notify-me"), Target::Role("notify"));
        assert_eq!(public("/api/v1/products/lamp/recommendations"), Target::Role("search"));
        assert_eq!(public("/api/v1/admin/search/reindex"), Target::Role("search"));
        assert_eq!(public("/api/v1/admin/products/export"), Target::Role("catalog"));
        assert_eq!(public("/api/v1/admin/orders/ord_1/refunds"), Target::Role("orders"));
        assert_eq!(public("/api/v1/admin/webhooks/wh_1/test"), Target::Role("notify"));
        assert_eq!(public("/.well-known/jwks.json"), Target::Role("auth"));
        assert_eq!(public("/media/products/prd_1/med_1-480.jpg"), Target::Role("catalog"));
        // The pages, and what nobody claims, go to web.
        for page in ["/", "/products/lamp", "/products/lamp/notify-me", "/search", "/assets/site.css", "/admin/products/new", "/api/openapi.json", "/api/v1/nothing-here", "/healthz"] {
            assert_eq!(public(page), Target::Role("web"), "{page}");
        }
        // Private things are refused outside; the internal server has only them.
        assert_eq!(public("/internal/v1/reservations"), Target::Refused(404));
        assert_eq!(public("/internal/v1/api-keys/resolve"), Target::Refused(404));
        assert_eq!(public("/metrics"), Target::Refused(404));
        let internal = |p: &str| map.resolve(Server::Internal, p);
        assert_eq!(internal("/internal/v1/reservations/ord_1/commit"), Target::Role("catalog"));
        assert_eq!(internal("/internal/v1/api-keys/resolve"), Target::Role("auth"));
        assert_eq!(internal("/.well-known/jwks.json"), Target::Role("auth"));
        for private_only in ["/", "/api/v1/products", "/.well-known/openid-configuration", "/metrics", "/internal/v1/nothing"] {
            assert_eq!(internal(private_only), Target::Refused(404), "{private_only}");
        }
    }

    #[test]
    fn upload_routes_take_larger_bodies() {
        let map = map();
        assert_eq!(map.body_limit("/api/v1/admin/products/prd_1/media"), BodyLimit::Upload);
        assert!(matches!(map.body_limit("/api/v1/admin/products/import"), BodyLimit::Bytes(n) if n >= 1024 * 1024));
        assert_eq!(map.body_limit("/api/v1/admin/products/prd_1"), BodyLimit::Default);
        assert_eq!(map.body_limit("/api/v1/carts/c/items"), BodyLimit::Default);
    }

    #[test]
    fn a_bad_table_is_refused_with_its_route_named() {
        static CLASH: &[Route] = &[Route::public("/api/v1/things/{id}")];
        static OTHER: &[Route] = &[Route::public("/api/v1/things/{slug}")];
        let e = RouteMap::new(&[("catalog", CLASH), ("search", OTHER)]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("/api/v1/things/{slug}") && e.contains("catalog"), "{e}");
        static OUTSIDE: &[Route] = &[Route::internal("/api/v1/secret")];
        assert!(RouteMap::new(&[("auth", OUTSIDE)]).is_err());
        static EXPOSED: &[Route] = &[Route::public("/internal/v1/secret")];
        assert!(RouteMap::new(&[("auth", EXPOSED)]).is_err());
        static ODD: &[Route] = &[Route::public("/api/v1/a b")];
        assert!(RouteMap::new(&[("auth", ODD)]).is_err());
    }

    fn args(upstreams: &[&str]) -> NginxArgs {
        NginxArgs {
            out: None,
            listen: "0.0.0.0:8080".into(),
            internal_listen: "127.0.0.1:8090".into(),
            upstreams: upstreams.iter().map(|s| s.to_string()).collect(),
            server_name: "_".into(),
            run_dir: None,
            pid_file: None,
            log_dir: None,
            log_stderr: false,
            resolver: None,
            worker_connections: 1024,
        }
    }

    #[test]
    fn upstreams_come_from_the_options_or_one_local_process_per_role() {
        let config = Config::default();
        let n = Nginx::from_args(&args(&["catalog=10.0.0.5:8080,10.0.0.6:8080", "web=web-1:8080", "web=web-2:8080"]), &config).unwrap();
        assert_eq!(n.upstreams["catalog"], vec!["10.0.0.5:8080", "10.0.0.6:8080"]);
        assert_eq!(n.upstreams["web"], vec!["web-1:8080", "web-2:8080"]);
        assert_eq!(n.upstreams["auth"], vec!["127.0.0.1:8101"]);
        assert_eq!(n.upstreams.len(), ROLES.len(), "every role has an upstream");
        for bad in ["catalog", "shop=1.2.3.4:80", "catalog=1.2.3.4", "catalog=1.2.3.4:0", "catalog=a;b:80", "catalog=::1:80", "catalog=1.2.3.4:80 down"] {
            assert!(Nginx::from_args(&args(&[bad]), &config).is_err(), "{bad}");
        }
        let mut same = args(&[]);
        same.internal_listen = same.listen.clone();
        assert!(Nginx::from_args(&same, &config).is_err());
        let mut injected = args(&[]);
        injected.run_dir = Some("/tmp/x; include /etc/passwd".into());
        assert!(Nginx::from_args(&injected, &config).is_err());
    }

    #[test]
    fn the_configuration_carries_the_limits_headers_and_health_settings() {
        let mut config = Config::default();
        config.http.body_limit_bytes = 2_000_000;
        config.media.max_upload_bytes = 5_000_000;
        let mut a = args(&["orders=10.0.0.7:8080,10.0.0.8:8080"]);
        a.resolver = Some("127.0.0.11".into());
        let text = render(&Nginx::from_args(&a, &config).unwrap(), &map());
        for line in [
            "client_max_body_size 2000000;",
            &format!("client_max_body_size {};", 5_000_000 + UPLOAD_FRAMING_BYTES),
            "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
            "proxy_set_header X-Forwarded-Proto $scheme;",
            "proxy_set_header X-Request-Id $emporium_request_id;",
            "proxy_set_header Host $host;",
            "proxy_next_upstream error timeout http_502 http_503;",
            "server 10.0.0.7:8080 max_fails=3 fail_timeout=10s resolve;",
            "resolver 127.0.0.11 valid=10s;",
            "keepalive 32;",
            "location ^~ /internal/ { return 404; }",
            "location = /metrics { return 404; }",
            "location / { proxy_pass http://emporium_web; }",
            "location ~ \"^/api/v1/products/[^/]+/notify-me$\" { proxy_pass http://emporium_notify; }",
            "location ^~ /.well-known/ { proxy_pass http://emporium_auth; }",
            "location = /.well-known/jwks.json { proxy_pass http://emporium_auth; }",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert!(!text.contains("non_idempotent"), "POST must never be sent twice");
    }

    #[test]
    fn of_two_regexes_that_fit_a_path_the_more_specific_comes_first() {
        // The internal server writes every route out (no prefixes), so the
        // regexes' order decides.
        static A: &[Route] = &[Route::internal("/internal/x/{id}/y"), Route::internal("/internal/x/{id}/{*rest}")];
        static B: &[Route] = &[Route::internal("/internal/x/lit/{p}")];
        let map = RouteMap::new(&[("orders", A), ("search", B)]).unwrap();
        let at = |p: &str| map.resolve(Server::Internal, p);
        assert_eq!(at("/internal/x/lit/y"), Target::Role("search"), "a name before a parameter");
        assert_eq!(at("/internal/x/other/y"), Target::Role("orders"));
        assert_eq!(at("/internal/x/other/y/z"), Target::Role("orders"), "the rest of the path last");
        assert_eq!(at("/internal/x/lit"), Target::Refused(404));
        let text = render(&Nginx::from_args(&args(&[]), &Config::default()).unwrap(), &map);
        let find = |route: &str| text.find(&format!("# {route}\n")).unwrap_or_else(|| panic!("{route} in\n{text}"));
        let (lit, param, rest) = (find("/internal/x/lit/{p}"), find("/internal/x/{id}/y"), find("/internal/x/{id}/{*rest}"));
        assert!(lit < param && param < rest, "{text}");
    }

    #[test]
    fn the_ready_url_is_on_loopback_for_a_wildcard_bind() {
        assert_eq!(ready_url("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080/readyz");
        assert_eq!(ready_url("[::]:9000".parse().unwrap()), "http://[::1]:9000/readyz");
        assert_eq!(ready_url("10.1.2.3:8080".parse().unwrap()), "http://10.1.2.3:8080/readyz");
    }
}
