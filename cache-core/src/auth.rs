//! Credentials and roles: who may call what.
//!
//! A node that runs with an auth file knows tokens only by their SHA-256 hashes. Each token
//! has a [`Role`]: `data` for one application's blobs, `admin` for membership, counters and
//! advice, or `peer` for the node-to-node calls (handoff, peek, fence, relays, gossip). The
//! file format is fixed, so that operators can generate it:
//!
//! ```toml
//! [[token]]
//! sha256 = "HEX of the token's SHA-256"
//! role = "data"        # or "admin" or "peer"
//! app = "payroll"      # for role "data" only
//! ```
//!
//! [`authorize`] is the whole decision: a missing or unknown token is
//! [`Error::Unauthenticated`], a token of the wrong role or app [`Error::PermissionDenied`].
//! The messages never name an application, so a caller learns nothing of what a node serves.
//!
//! # Examples
//! ```
//! use cache_core::auth::{Action, Credentials, Role, authorize, token_entry};
//!
//! let file = token_entry("s3cret", Role::Data, Some("payroll"));
//! let creds = Credentials::parse(&file).unwrap();
//! let caller = creds.lookup("s3cret");
//! assert!(authorize(caller, Action::Data { app: "payroll" }).is_ok());
//! assert!(authorize(caller, Action::Data { app: "billing" }).is_err());
//! assert!(authorize(creds.lookup("guess"), Action::Members).is_err());
//! ```

use std::collections::HashMap;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::error::Error;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Gets, puts, deletes and invalidations of one application's blobs.
    Data,
    /// Membership changes, counters and scaling advice.
    Admin,
    /// Node-to-node calls: handoff, peek, fence, relays of membership, gossip, counters.
    Peer,
}

impl Role {
    /// The role's name in the auth file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Admin => "admin",
            Role::Peer => "peer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = AuthFileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "data" => Ok(Role::Data),
            "admin" => Ok(Role::Admin),
            "peer" => Ok(Role::Peer),
            other => Err(AuthFileError(format!(
                "unknown role {:?}: expected \"data\", \"admin\" or \"peer\"",
                truncate(other)
            ))),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request comes from: the role of its token, and for `data` the one app it may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The token's role.
    pub role: Role,
    /// The application a `data` token is for; `None` for the other roles.
    pub app: Option<String>,
}

impl Principal {
    /// A principal of `role` (with `app` for [`Role::Data`]).
    pub fn new(role: Role, app: Option<String>) -> Self {
        Self { role, app }
    }

    /// Whether this principal may learn that a node serves `app`: admins and peers may, and
    /// a `data` token for that app.
    pub fn may_know_app(&self, app: &str) -> bool {
        match self.role {
            Role::Admin | Role::Peer => true,
            Role::Data => self.app.as_deref() == Some(app),
        }
    }
}

/// A call that needs a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// A data call (get, put, delete, batch, pipe, watch) naming `app`.
    Data {
        /// The app the request names.
        app: &'a str,
    },
    /// `Admin.Members`: any valid token (clients route by the member list).
    Members,
    /// `Admin.Health`: any valid token.
    Health,
    /// `Admin.Stats`: admins, and peers (a node gathers every member's for advice).
    Stats,
    /// `Admin.Advice`: admins.
    Advice,
    /// `Admin.SetMembers` claiming a new epoch: admins.
    SetMembers,
    /// `Admin.SetMembers` as a relay of an epoch already claimed in the store: admins and
    /// peers.
    Relay,
    /// Any `Peer.*` call: peers.
    Peer,
}

impl Action<'_> {
    /// The roles this action admits, for messages.
    fn needs(&self) -> &'static str {
        match self {
            Action::Data { .. } => "a data token for the app it names",
            Action::Members | Action::Health => "any valid token",
            Action::Stats => "an admin or peer token",
            Action::Advice | Action::SetMembers => "an admin token",
            Action::Relay => "an admin or peer token",
            Action::Peer => "a peer token",
        }
    }
}

/// Whether `caller` (`None`: no valid token) may do `action`.
///
/// # Errors
/// [`Error::Unauthenticated`] when there is no caller, [`Error::PermissionDenied`] when its
/// role or app does not allow the action. The messages name the role needed, never an app.
pub fn authorize(caller: Option<&Principal>, action: Action<'_>) -> Result<(), Error> {
    let Some(p) = caller else {
        return Err(Error::Unauthenticated(
            "a valid token is required (authorization: Bearer TOKEN)".into(),
        ));
    };
    let allowed = match action {
        Action::Data { app } => p.role == Role::Data && p.app.as_deref() == Some(app),
        Action::Members | Action::Health => true,
        Action::Stats | Action::Relay => matches!(p.role, Role::Admin | Role::Peer),
        Action::Advice | Action::SetMembers => p.role == Role::Admin,
        Action::Peer => p.role == Role::Peer,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::PermissionDenied(format!(
            "a {} token may not make this call: it needs {}",
            p.role,
            action.needs()
        )))
    }
}

/// A token's SHA-256, as the auth file stores it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A token's SHA-256 in lowercase hex, as the auth file writes it.
pub fn token_hash_hex(token: &str) -> String {
    to_hex(&token_hash(token))
}

/// Bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The `[[token]]` entry of the auth file for `token`.
pub fn token_entry(token: &str, role: Role, app: Option<&str>) -> String {
    let mut entry = format!(
        "[[token]]\nsha256 = \"{}\"\nrole = \"{role}\"\n",
        token_hash_hex(token)
    );
    if let Some(app) = app {
        entry.push_str(&format!("app = {}\n", toml_string(app)));
    }
    entry
}

fn toml_string(s: &str) -> String {
    // A TOML basic string is a JSON string for every character JSON escapes.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A malformed auth file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth file: {0}")]
pub struct AuthFileError(pub String);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<FileToken>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    sha256: String,
    role: String,
    app: Option<String>,
}

/// The tokens a node accepts, by their SHA-256 hashes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tokens", &self.by_hash.len())
            .finish()
    }
}

impl Credentials {
    /// Parses an auth file (see the module docs for its format).
    ///
    /// # Errors
    /// [`AuthFileError`] for bad TOML, an unknown field or role, a hash that is not 64 hex
    /// digits, a `data` token without an app (or another role with one), a hash listed
    /// twice, or a file with no token.
    pub fn parse(text: &str) -> Result<Self, AuthFileError> {
        let file: File = toml::from_str(text).map_err(|e| AuthFileError(e.to_string()))?;
        if file.token.is_empty() {
            return Err(AuthFileError("no [[token]] entry".into()));
        }
        let mut by_hash = HashMap::new();
        for (i, t) in file.token.into_iter().enumerate() {
            let n = i + 1;
            let hash = from_hex(&t.sha256.to_ascii_lowercase())
                .ok_or_else(|| AuthFileError(format!("token {n}: sha256 must be 64 hex digits")))?;
            let role: Role = t
                .role
                .parse()
                .map_err(|AuthFileError(e)| AuthFileError(format!("token {n}: {e}")))?;
            let app = match (role, t.app) {
                (Role::Data, Some(app)) if !app.is_empty() => Some(app),
                (Role::Data, _) => {
                    return Err(AuthFileError(format!(
                        "token {n}: a data token needs an app"
                    )));
                }
                (_, Some(_)) => {
                    return Err(AuthFileError(format!(
                        "token {n}: only data tokens name an app"
                    )));
                }
                (_, None) => None,
            };
            if by_hash.insert(hash, Principal::new(role, app)).is_some() {
                return Err(AuthFileError(format!(
                    "token {n}: the same hash is listed twice"
                )));
            }
        }
        Ok(Self { by_hash })
    }

    /// Credentials holding exactly these tokens, for tests and embedders that keep tokens
    /// elsewhere.
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = (&'a str, Principal)>) -> Self {
        Self {
            by_hash: tokens
                .into_iter()
                .map(|(t, p)| (token_hash(t), p))
                .collect(),
        }
    }

    /// The principal of `token`, if it is known. Only its hash is compared.
    pub fn lookup(&self, token: &str) -> Option<&Principal> {
        self.by_hash.get(&token_hash(token))
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The token of an `authorization: Bearer TOKEN` header value, if it has that form.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether a node may listen on `ip` with its configuration: a loopback address always; any
/// other only with credentials, or when insecure serving was asked for explicitly.
///
/// # Errors
/// A message that says why, and what to do, for a non-loopback address without either.
pub fn check_exposure(what: &str, ip: IpAddr, auth: bool, insecure: bool) -> Result<(), String> {
    if auth || insecure || ip.is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve {what} on {ip} without credentials: anyone who can reach a \
         non-loopback address could read, write and take over the cache. Give an auth file \
         (--auth FILE), listen on a loopback address, or pass --insecure to serve without \
         credentials anyway"
    ))
}

/// Truncates untrusted text for an error message.
fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file() -> String {
        [
            token_entry("data-a", Role::Data, Some("a")),
            token_entry("data-b", Role::Data, Some("b")),
            token_entry("admin", Role::Admin, None),
            token_entry("peer", Role::Peer, None),
        ]
        .join("\n")
    }

    #[test]
    fn parses_and_looks_up_by_hash() {
        let c = Credentials::parse(&file()).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(
            c.lookup("data-a"),
            Some(&Principal::new(Role::Data, Some("a".into())))
        );
        assert_eq!(c.lookup("admin").unwrap().role, Role::Admin);
        assert!(c.lookup("nope").is_none());
        // The file holds hashes only.
        assert!(!file().contains("data-a\""));
    }

    #[test]
    fn the_documented_hash_is_sha256_hex() {
        assert_eq!(
            token_hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn refuses_malformed_files() {
        let cases = [
            ("", "no [[token]]"),
            ("[[token]]\nsha256 = \"xy\"\nrole = \"admin\"\n", "64 hex"),
            (
                &format!(
                    "[[token]]\nsha256 = \"{}\"\nrole = \"root\"\n",
                    "a".repeat(64)
                ),
                "unknown role",
            ),
            (
                &format!(
                    "[[token]]\nsha256 = \"{}\"\nrole = \"data\"\n",
                    "a".repeat(64)
                ),
                "needs an app",
            ),
            (
                &format!(
                    "[[token]]\nsha256 = \"{}\"\nrole = \"peer\"\napp = \"x\"\n",
                    "a".repeat(64)
                ),
                "only data tokens",
            ),
            (
                &format!(
                    "[[token]]\nsha256 = \"{}\"\nrole = \"peer\"\nextra = 1\n",
                    "a".repeat(64)
                ),
                "unknown field",
            ),
            (
                &format!("{}\n{}", file(), token_entry("admin", Role::Admin, None)),
                "twice",
            ),
        ];
        for (text, want) in cases {
            let err = Credentials::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should say {want:?}");
        }
    }

    #[test]
    fn roles_decide_every_action() {
        let c = Credentials::parse(&file()).unwrap();
        let [a, b, admin, peer] = ["data-a", "data-b", "admin", "peer"].map(|t| c.lookup(t));
        let data_a = Action::Data { app: "a" };
        assert!(authorize(a, data_a).is_ok());
        for denied in [b, admin, peer] {
            assert!(matches!(
                authorize(denied, data_a),
                Err(Error::PermissionDenied(_))
            ));
        }
        for any in [a, b, admin, peer] {
            assert!(authorize(any, Action::Members).is_ok());
            assert!(authorize(any, Action::Health).is_ok());
        }
        assert!(authorize(admin, Action::SetMembers).is_ok());
        assert!(authorize(peer, Action::SetMembers).is_err());
        assert!(authorize(peer, Action::Relay).is_ok());
        assert!(authorize(admin, Action::Relay).is_ok());
        assert!(authorize(a, Action::Relay).is_err());
        assert!(authorize(peer, Action::Peer).is_ok());
        assert!(authorize(admin, Action::Peer).is_err());
        assert!(authorize(a, Action::Peer).is_err());
        assert!(authorize(peer, Action::Stats).is_ok());
        assert!(authorize(a, Action::Stats).is_err());
        assert!(authorize(admin, Action::Advice).is_ok());
        assert!(authorize(peer, Action::Advice).is_err());
        assert!(matches!(
            authorize(None, Action::Members),
            Err(Error::Unauthenticated(_))
        ));
    }

    #[test]
    fn denials_never_name_an_app() {
        let p = Principal::new(Role::Data, Some("secret-app".into()));
        let err = authorize(Some(&p), Action::Data { app: "other-app" }).unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("secret-app") && !text.contains("other-app"),
            "{text}"
        );
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn only_loopback_is_open_without_credentials() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo8: IpAddr = "127.3.2.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let lan: IpAddr = "10.0.0.1".parse().unwrap();
        for ip in [lo, lo8, lo6] {
            assert!(check_exposure("x", ip, false, false).is_ok());
        }
        for ip in [any, lan] {
            let err = check_exposure("data", ip, false, false).unwrap_err();
            assert!(
                err.contains("--insecure") && err.contains("--auth"),
                "{err}"
            );
            assert!(check_exposure("data", ip, true, false).is_ok());
            assert!(check_exposure("data", ip, false, true).is_ok());
        }
    }

    fn principal() -> impl Strategy<Value = Option<Principal>> {
        prop_oneof![
            Just(None),
            Just(Some(Principal::new(Role::Admin, None))),
            Just(Some(Principal::new(Role::Peer, None))),
            "[ab]".prop_map(|app| Some(Principal::new(Role::Data, Some(app)))),
        ]
    }

    proptest! {
        /// Data access is exactly "a data token for that app", and nothing but a peer token
        /// reaches the peer service: no other role or app slips through.
        #[test]
        fn data_and_peer_access_is_exact(p in principal(), app in "[ab]") {
            let data = authorize(p.as_ref(), Action::Data { app: &app }).is_ok();
            let expected = p.as_ref().is_some_and(|p| {
                p.role == Role::Data && p.app.as_deref() == Some(app.as_str())
            });
            prop_assert_eq!(data, expected);
            let peer = authorize(p.as_ref(), Action::Peer).is_ok();
            prop_assert_eq!(peer, p.as_ref().is_some_and(|p| p.role == Role::Peer));
            // Whoever may read an app's data may know that the node serves it.
            if data {
                prop_assert!(p.as_ref().unwrap().may_know_app(&app));
            }
        }

        /// Any token written by `token_entry` parses back to its principal.
        #[test]
        fn entries_round_trip(token in "[!-~]{1,40}", app in "\\PC{1,20}") {
            let c = Credentials::parse(&token_entry(&token, Role::Data, Some(&app))).unwrap();
            prop_assert_eq!(c.lookup(&token), Some(&Principal::new(Role::Data, Some(app))));
        }
    }
}
