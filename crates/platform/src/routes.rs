//! A service's route table: every path its router answers, documented or
//! not, for the load balancer's route map (`emporium deploy nginx`). Each
//! service keeps its table beside its router (`catalog::ROUTES`); a test
//! mounts every service and holds the table to what the router answers.

/// Which server of the load balancer offers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The public server: shoppers, staff and API clients.
    Public,
    /// The internal server only: calls between processes (`/internal/…`),
    /// never reachable from outside.
    Internal,
    /// Both servers: what other processes fetch and anyone may read (the
    /// token keys).
    Both,
}

/// The largest request body a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// `http.body_limit_bytes`, as every route unless it says otherwise.
    Default,
    /// A picture: `media.max_upload_bytes` and [`UPLOAD_FRAMING_BYTES`] of
    /// multipart framing around it.
    Upload,
    /// A fixed size (a product import).
    Bytes(usize),
}

/// What a picture upload may carry besides the picture: the multipart
/// boundaries and part headers.
pub const UPLOAD_FRAMING_BYTES: usize = 64 * 1024;

/// One path of a service's router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The path as the router has it: `/api/v1/products/{id}`, and
    /// `/media/{*key}` for a route that takes the rest of the path.
    pub path: &'static str,
    pub reach: Reach,
    pub body: BodyLimit,
}

impl Route {
    /// A route of the public server.
    pub const fn public(path: &'static str) -> Route {
        Route { path, reach: Reach::Public, body: BodyLimit::Default }
    }

    /// A route of the internal server only.
    pub const fn internal(path: &'static str) -> Route {
        Route { path, reach: Reach::Internal, body: BodyLimit::Default }
    }

    /// A route of both servers.
    pub const fn both(path: &'static str) -> Route {
        Route { path, reach: Reach::Both, body: BodyLimit::Default }
    }

    /// The route takes a picture upload.
    pub const fn upload(self) -> Route {
        Route { body: BodyLimit::Upload, ..self }
    }

    /// The route takes bodies of up to `bytes`.
    pub const fn body_bytes(self, bytes: usize) -> Route {
        Route { body: BodyLimit::Bytes(bytes), ..self }
    }
}
