//! The web app on an ephemeral loopback port over a real database (a SQLite
//! file or a PostgreSQL server started for the test), and an HTTP client that logs in.

pub mod edge;
pub mod postgres;

use std::net::SocketAddr;

use dime_web::{MediaBase, Options, Server, Store};
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A database for one test; dropping it removes it.
pub enum Db {
    /// A SQLite file in a temporary directory.
    Sqlite(TempDir),
    /// A PostgreSQL server of its own.
    Postgres(postgres::Postgres),
}

impl Db {
    /// A fresh SQLite file (not created yet: the app creates it).
    pub async fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("create a temporary directory"))
    }

    /// A fresh PostgreSQL server.
    pub async fn postgres() -> Self {
        Self::Postgres(
            tokio::task::spawn_blocking(postgres::Postgres::start)
                .await
                .expect("start postgres"),
        )
    }

    /// The `--db` URL.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => format!("sqlite://{}", dir.path().join("web.db").display()),
            Self::Postgres(server) => server.url(),
        }
    }
}

/// The password every test admin has.
pub const PASSWORD: &str = "correct horse battery";

/// A running web app.
pub struct App {
    /// The bound address.
    pub addr: SocketAddr,
    /// Direct access to the same database.
    pub store: Store,
    /// A client that never follows redirects and keeps no cookies: tests see every header.
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _db: Option<Db>,
}

impl App {
    /// Starts the app over `db` with the media base `/stream/`, uploads off.
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, None).await
    }

    /// Starts the app over `db` with the media base `/stream/` and uploads into `media_root`.
    pub async fn start_with(db: Db, media_root: Option<std::path::PathBuf>) -> Self {
        Self::start_options(
            db,
            Options {
                media_base: MediaBase::new("/stream/").expect("media base"),
                media_root,
                ..Options::default()
            },
        )
        .await
    }

    /// Starts the app over `db` with `options`.
    pub async fn start_options(db: Db, options: Options) -> Self {
        let store = Store::open(&db.url()).await.expect("open the database");
        let server = Server::bind(
            "127.0.0.1:0".parse().expect("loopback address"),
            store.clone(),
            options,
        )
        .await
        .expect("start the web app");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the client");
        Self {
            addr,
            store,
            client,
            stop: Some(stop),
            task: Some(task),
            _db: Some(db),
        }
    }

    /// Talks to a web app that runs elsewhere (another process) at `addr`, over `store`.
    pub fn attach(addr: SocketAddr, store: Store) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the client");
        Self {
            addr,
            store,
            client,
            stop: None,
            task: None,
            _db: None,
        }
    }

    /// The URL of `path` on this app.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// `GET path` with a cookie.
    pub async fn get_with_cookie(&self, path: &str, cookie: &str) -> Response {
        self.client
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .expect("GET")
    }

    /// `POST path` with a form and an optional cookie.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        cookie: Option<&str>,
    ) -> Response {
        let cookie = cookie.map(|cookie| ("cookie", cookie));
        self.post_form_with(path, form, cookie.as_slice()).await
    }

    /// `POST path` with a form and extra request headers.
    pub async fn post_form_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self.client.post(self.url(path)).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST")
    }

    /// `POST path` with no body.
    pub async fn post(&self, path: &str) -> Response {
        self.post_with(path, &[]).await
    }

    /// `POST path` with no body and extra request headers.
    pub async fn post_with(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self.client.post(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST")
    }

    /// A fresh login form: its `Cookie` header (`dime_login=…`) and its CSRF token.
    pub async fn login_form(&self) -> (String, String) {
        let form = self.get("/admin/login").await;
        assert_eq!(form.status(), StatusCode::OK);
        let login_cookie = set_cookie_pair(form.headers(), "dime_login").expect("login cookie");
        let token = hidden_token(&form.text().await.expect("login page"));
        (login_cookie, token)
    }

    /// Creates admin `username` with [`PASSWORD`] and logs in.
    pub async fn admin(&self, username: &str) -> Admin {
        self.store
            .create_admin(username, PASSWORD)
            .await
            .expect("create admin");
        self.login(username, PASSWORD).await.expect("log in")
    }

    /// Logs in through the form; `Err` holds the failed response.
    pub async fn login(&self, username: &str, password: &str) -> Result<Admin, Response> {
        self.login_via(None, username, password).await
    }

    /// Logs in through the form as a client that a proxy names in `X-Forwarded-For`.
    pub async fn login_via(
        &self,
        forwarded_for: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<Admin, Response> {
        let (login_cookie, token) = self.login_form().await;
        let mut headers = vec![("cookie", login_cookie.as_str())];
        headers.extend(forwarded_for.map(|client| ("x-forwarded-for", client)));
        let response = self
            .post_form_with(
                "/admin/login",
                &[
                    ("csrf_token", &token),
                    ("username", username),
                    ("password", password),
                ],
                &headers,
            )
            .await;
        if response.status() != StatusCode::SEE_OTHER {
            return Err(response);
        }
        let cookie = set_cookie_pair(response.headers(), "dime_session").expect("session cookie");
        let index = self.get_with_cookie("/admin/", &cookie).await;
        assert_eq!(index.status(), StatusCode::OK, "the admin list after login");
        let csrf = hidden_token(&index.text().await.expect("admin page"));
        Ok(Admin { cookie, csrf })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A logged-in admin: the `Cookie` header to send and the session's CSRF token.
pub struct Admin {
    /// `dime_session=…`.
    pub cookie: String,
    /// The token forms must carry.
    pub csrf: String,
}

/// `name=value` of the `Set-Cookie` header that sets cookie `name`.
pub fn set_cookie_pair(headers: &HeaderMap, name: &str) -> Option<String> {
    set_cookie_line(headers, name).map(|line| line.split(';').next().unwrap_or_default().to_owned())
}

/// The whole `Set-Cookie` line for cookie `name`.
pub fn set_cookie_line(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|line| line.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the first `name="csrf_token"` hidden field in a page.
pub fn hidden_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("a csrf_token field") + marker.len();
    let end = html[start..].find('"').expect("end of the token") + start;
    html[start..end].to_owned()
}

/// The response's `Cache-Control`, or "" when absent.
pub fn cache_control(response: &Response) -> String {
    response
        .headers()
        .get("cache-control")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Runs each named scenario `async fn name(db: Db)` once on SQLite and once on PostgreSQL,
/// as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::web::Db::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::web::Db::postgres().await).await
                }
            )*
        }
    };
}
