//! The web app end to end over HTTP: pages, the player API, cache headers, admin login,
//! CSRF and CRUD, each scenario on SQLite and on a real PostgreSQL.

use dime_origin_testing::on_both_databases;
use dime_origin_testing::web::{cache_control, hidden_token, set_cookie_line, App, Db, PASSWORD};
use dime_web::catalog::{ChannelFields, TitleFields};
use dime_web::client_address::TrustedProxies;
use dime_web::Options;
use reqwest::StatusCode;
use serde_json::Value;

on_both_databases!(
    home_lists_every_title_and_channel_with_its_views,
    a_title_page_plays_the_stream_and_counts_views_server_side,
    a_channel_page_plays_the_live_stream,
    unknown_addresses_are_404_and_wrong_methods_405_with_small_bodies,
    static_assets_are_versioned_and_cached_for_a_year,
    admin_pages_need_a_login_and_are_never_cached,
    login_failures_do_not_say_which_part_was_wrong,
    an_admin_adds_edits_and_deletes_a_title,
    an_admin_adds_edits_and_deletes_a_channel,
    forms_with_a_wrong_csrf_token_are_refused,
    malformed_and_invalid_forms_are_400_and_taken_slugs_409,
    logout_ends_the_session,
    health_follows_the_database,
    concurrent_wrong_logins_are_counted_before_any_password_is_checked,
    oversized_login_fields_are_refused_before_anything_else,
    a_viewer_counts_once_per_entry_per_hour,
);

fn sample_title(slug: &str) -> TitleFields {
    TitleFields {
        slug: slug.to_owned(),
        title: format!("The {slug} story"),
        description: "A test title.".to_owned(),
        poster: Some(format!("vod/{slug}/poster.jpg")),
        duration_ms: Some(185_000),
        stream_url: format!("vod/{slug}/index.m3u8"),
    }
}

fn camera() -> ChannelFields {
    ChannelFields {
        slug: "camera".to_owned(),
        name: "Front door camera".to_owned(),
        description: String::new(),
        poster: None,
        stream_url: "live/camera/index.m3u8".to_owned(),
    }
}

async fn json(response: reqwest::Response) -> Value {
    serde_json::from_str(&response.text().await.expect("body")).expect("JSON body")
}

async fn home_lists_every_title_and_channel_with_its_views(db: Db) {
    let app = App::start(db).await;
    app.store
        .create_title(&sample_title("sample"))
        .await
        .unwrap();
    app.store.create_channel(&camera()).await.unwrap();
    app.store
        .count_view(dime_web::catalog::Kind::Title, "sample")
        .await
        .unwrap();

    let home = app.get("/").await;
    assert_eq!(home.status(), StatusCode::OK);
    assert_eq!(cache_control(&home), "public, max-age=10");
    assert!(home.headers().get("set-cookie").is_none());
    let html = home.text().await.unwrap();
    assert!(html.contains(r#"href="/titles/sample""#), "{html}");
    assert!(html.contains("The sample story"));
    assert!(html.contains(r#"src="/stream/vod/sample/poster.jpg""#));
    assert!(html.contains("3:05"), "the duration is shown");
    assert!(html.contains(r#"<span class="views">1</span> views"#));
    assert!(html.contains(r#"href="/live/camera""#));
    assert!(html.contains("Front door camera"));
    assert!(html.contains("LIVE"));
}

async fn a_title_page_plays_the_stream_and_counts_views_server_side(db: Db) {
    let app = App::start(db).await;
    app.store
        .create_title(&sample_title("sample"))
        .await
        .unwrap();

    let page = app.get("/titles/sample").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(cache_control(&page), "public, max-age=10");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<video id="player""#), "{html}");
    assert!(html.contains(r#"data-src="/stream/vod/sample/index.m3u8""#));
    assert!(html.contains(r#"data-views-url="/api/views/titles/sample""#));
    assert!(html.contains(r#"<span id="views">0</span>"#));
    assert!(html.contains(r#"<script src="/static/vendor/hls.min.js?v="#));
    assert!(html.contains(r#"<script src="/static/player.js?v="#));
    assert!(!html.contains("://"), "no third-party URL in the page");

    // The player posts once per playback start; the server counts (two viewers here: one
    // viewer counts once an hour).
    for (viewer, expected) in [("198.51.100.1", 1), ("198.51.100.2", 2)] {
        let counted = app
            .post_with("/api/views/titles/sample", &[("x-forwarded-for", viewer)])
            .await;
        assert_eq!(counted.status(), StatusCode::OK);
        assert_eq!(cache_control(&counted), "no-store");
        let body = json(counted).await;
        assert_eq!(body["views"], expected);
        assert_eq!(body["slug"], "sample");
    }
    let html = app.get("/titles/sample").await.text().await.unwrap();
    assert!(html.contains(r#"<span id="views">2</span>"#));

    let catalog = app.get("/api/catalog").await;
    assert_eq!(cache_control(&catalog), "no-store");
    let catalog = json(catalog).await;
    let title = &catalog["titles"][0];
    assert_eq!(title["slug"], "sample");
    assert_eq!(title["views"], 2);
    assert_eq!(title["src"], "/stream/vod/sample/index.m3u8");
    assert_eq!(title["stream_url"], "vod/sample/index.m3u8");
    assert_eq!(title["duration_ms"], 185_000);
    assert_eq!(title["page"], "/titles/sample");
}

async fn a_channel_page_plays_the_live_stream(db: Db) {
    let app = App::start(db).await;
    app.store.create_channel(&camera()).await.unwrap();
    let mut remote = camera();
    remote.slug = "remote".to_owned();
    remote.stream_url = "https://media.example/live/index.m3u8".to_owned();
    app.store.create_channel(&remote).await.unwrap();

    let html = app.get("/live/camera").await.text().await.unwrap();
    assert!(
        html.contains(r#"data-src="/stream/live/camera/index.m3u8""#),
        "{html}"
    );
    assert!(html.contains(r#"data-live="true""#));
    let html = app.get("/live/remote").await.text().await.unwrap();
    assert!(
        html.contains(r#"data-src="https://media.example/live/index.m3u8""#),
        "absolute URLs stay as they are"
    );

    let counted = json(app.post("/api/views/live/camera").await).await;
    assert_eq!(counted["views"], 1);
    let catalog = json(app.get("/api/catalog").await).await;
    let views: Vec<_> = catalog["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|channel| {
            (
                channel["slug"].as_str().unwrap().to_owned(),
                channel["views"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(views, [("camera".to_owned(), 1), ("remote".to_owned(), 0)]);
}

async fn unknown_addresses_are_404_and_wrong_methods_405_with_small_bodies(db: Db) {
    let app = App::start(db).await;
    app.store
        .create_title(&sample_title("sample"))
        .await
        .unwrap();

    for path in [
        "/titles/missing",
        "/live/missing",
        "/nowhere",
        "/static/missing.js",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(cache_control(&response).contains("no-store"), "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(
            !response.text().await.unwrap().is_empty(),
            "{path} has a body"
        );
    }
    let missing = app.post("/api/views/titles/missing").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(json(missing).await["error"]
        .as_str()
        .unwrap()
        .contains("missing"));
    assert_eq!(
        app.post("/api/views/movies/sample").await.status(),
        StatusCode::NOT_FOUND
    );

    let wrong = app.client.delete(app.url("/")).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong.headers()["allow"].to_str().unwrap().contains("GET"));
    assert!(wrong.text().await.unwrap().contains("405"));
    assert_eq!(
        app.post("/titles/sample").await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    let wrong = app.get("/api/views/titles/sample").await;
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json(wrong).await["status"], 405);
    // Views are only ever counted by POST.
    assert_eq!(
        json(app.get("/api/catalog").await).await["titles"][0]["views"],
        0
    );
}

async fn static_assets_are_versioned_and_cached_for_a_year(db: Db) {
    let app = App::start(db).await;
    let home = app.get("/").await.text().await.unwrap();
    let start = home
        .find("/static/style.css?v=")
        .expect("versioned stylesheet");
    let url = &home[start..home[start..].find('"').unwrap() + start];

    let css = app.get(url).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert_eq!(cache_control(&css), "public, max-age=31536000, immutable");
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    let etag = css.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        url.ends_with(etag.trim_matches('"')),
        "the version is the content hash"
    );

    let again = app
        .client
        .get(app.url(url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    let hls = app.get("/static/vendor/hls.min.js").await;
    assert_eq!(hls.status(), StatusCode::OK);
    assert_eq!(cache_control(&hls), "public, max-age=31536000, immutable");
    let body = hls.bytes().await.unwrap();
    assert_eq!(&body[..], include_bytes!("../static/vendor/hls.min.js"));
}

async fn admin_pages_need_a_login_and_are_never_cached(db: Db) {
    let app = App::start(db).await;
    let index = app.get("/admin/").await;
    assert_eq!(index.status(), StatusCode::SEE_OTHER);
    assert_eq!(index.headers()["location"], "/admin/login");
    assert_eq!(cache_control(&index), "private, no-store");

    let refused = app
        .post_form(
            "/admin/titles",
            &[("csrf_token", "x"), ("title", "T")],
            None,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(cache_control(&refused), "private, no-store");

    let login = app.get("/admin/login").await;
    assert_eq!(cache_control(&login), "private, no-store");
    let cookie = set_cookie_line(login.headers(), "dime_login").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http: no Secure flag");

    app.store.create_admin("alice", PASSWORD).await.unwrap();
    let admin = app.login("alice", PASSWORD).await.expect("log in");
    let index = app.get_with_cookie("/admin/", &admin.cookie).await;
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(cache_control(&index), "private, no-store");
    // A session makes even a public page personal: the edge must not keep it.
    let home = app.get_with_cookie("/", &admin.cookie).await;
    assert_eq!(cache_control(&home), "private, no-store");

    // Behind the edge over https, cookies are Secure.
    let login = app
        .client
        .get(app.url("/admin/login"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = set_cookie_line(login.headers(), "dime_login").unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

async fn login_failures_do_not_say_which_part_was_wrong(db: Db) {
    let app = App::start(db).await;
    app.store.create_admin("alice", PASSWORD).await.unwrap();

    let wrong_password = app
        .login("alice", "not the password")
        .await
        .err()
        .expect("refused");
    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_line(wrong_password.headers(), "dime_session").is_none());
    let wrong_password = wrong_password.text().await.unwrap();
    let unknown_user = app.login("mallory", PASSWORD).await.err().expect("refused");
    assert_eq!(unknown_user.status(), StatusCode::UNAUTHORIZED);
    let unknown_user = unknown_user.text().await.unwrap();
    for page in [&wrong_password, &unknown_user] {
        assert!(page.contains("Invalid username or password."), "{page}");
    }

    // The login form's own token must come back with the matching cookie.
    let form = app.get("/admin/login").await;
    let token = hidden_token(&form.text().await.unwrap());
    let forged = app
        .post_form(
            "/admin/login",
            &[
                ("csrf_token", &token),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
            None,
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}

/// The throttle is in memory, the same over either database: SQLite only.
#[tokio::test]
async fn repeated_login_failures_are_refused_for_a_while() {
    let app = App::start(Db::sqlite().await).await;
    app.store.create_admin("alice", PASSWORD).await.unwrap();

    // Five wrong passwords from one client (the default limit) are each a plain 401.
    for _ in 0..5 {
        let refused = app.login("alice", "guess").await.err().expect("refused");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    // The sixth try is refused before the password is looked at, even the right one.
    let throttled = app.login("alice", PASSWORD).await.err().expect("throttled");
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie_line(throttled.headers(), "dime_session").is_none());
    let retry_after: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((850..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(cache_control(&throttled), "private, no-store");
    let page = throttled.text().await.unwrap();
    assert!(
        page.contains("Too many failed logins. Try again in 15 minutes."),
        "{page}"
    );
    // Another username from the same client: the address is what is blocked.
    let other = app.login("bob", "guess").await.err().expect("throttled");
    assert_eq!(other.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another viewer behind the edge (named by X-Forwarded-For) logs in as usual; the last
    // entry is the one the edge added, so a client cannot pick its own.
    app.login_via(Some("192.0.2.1, 203.0.113.7"), "alice", PASSWORD)
        .await
        .expect("another client logs in");
    let spoofed = app
        .login_via(Some("203.0.113.7, 127.0.0.1"), "alice", PASSWORD)
        .await
        .err()
        .expect("still the throttled address");
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS);
}

async fn an_admin_adds_edits_and_deletes_a_title(db: Db) {
    let app = App::start(db).await;
    let admin = app.admin("alice").await;

    let new = app
        .get_with_cookie("/admin/titles/new", &admin.cookie)
        .await;
    assert_eq!(new.status(), StatusCode::OK);
    assert!(new
        .text()
        .await
        .unwrap()
        .contains(r#"action="/admin/titles""#));

    let created = app
        .post_form(
            "/admin/titles",
            &[
                ("csrf_token", &admin.csrf),
                ("title", "Big Buck Bunny"),
                ("slug", ""),
                ("description", "A rabbit <b>and</b> friends."),
                ("poster", "vod/bbb/poster.jpg"),
                ("duration", "9:56"),
                ("stream_url", "vod/bbb/index.m3u8"),
            ],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    assert_eq!(created.headers()["location"], "/admin/?notice=created");
    let title = app
        .store
        .title_by_slug("big-buck-bunny")
        .await
        .unwrap()
        .expect("created");
    assert_eq!(title.duration_ms, Some(596_000));
    assert_eq!(title.stream_url, "vod/bbb/index.m3u8");

    let page = app
        .get("/titles/big-buck-bunny")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("A rabbit &lt;b&gt;and&lt;/b&gt; friends."),
        "escaped: {page}"
    );

    app.post("/api/views/titles/big-buck-bunny").await;
    let edit = app
        .get_with_cookie(&format!("/admin/titles/{}/edit", title.id), &admin.cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(edit.contains(r#"value="9:56""#), "{edit}");
    let updated = app
        .post_form(
            &format!("/admin/titles/{}", title.id),
            &[
                ("csrf_token", &admin.csrf),
                ("title", "Big Buck Bunny (2008)"),
                ("slug", "bbb"),
                ("description", ""),
                ("poster", ""),
                ("duration", ""),
                ("stream_url", "https://media.example/bbb.m3u8"),
            ],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::SEE_OTHER);
    let title = app
        .store
        .title_by_id(title.id)
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(title.slug, "bbb");
    assert_eq!(title.poster, None);
    assert_eq!(title.duration_ms, None);
    assert_eq!(title.views, 1, "editing keeps the view count");
    assert_eq!(
        app.get("/titles/big-buck-bunny").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/titles/bbb").await.status(), StatusCode::OK);

    let deleted = app
        .post_form(
            &format!("/admin/titles/{}/delete", title.id),
            &[("csrf_token", &admin.csrf)],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.get("/titles/bbb").await.status(), StatusCode::NOT_FOUND);
    assert!(app.store.titles().await.unwrap().is_empty());
    let again = app
        .post_form(
            &format!("/admin/titles/{}/delete", title.id),
            &[("csrf_token", &admin.csrf)],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

async fn an_admin_adds_edits_and_deletes_a_channel(db: Db) {
    let app = App::start(db).await;
    let admin = app.admin("alice").await;

    let created = app
        .post_form(
            "/admin/channels",
            &[
                ("csrf_token", &admin.csrf),
                ("name", "Camera"),
                ("slug", "camera"),
                ("description", "The lab's webcam."),
                ("poster", ""),
                ("stream_url", "live/camera/index.m3u8"),
            ],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let channel = app
        .store
        .channel_by_slug("camera")
        .await
        .unwrap()
        .expect("created");
    let listed = app
        .get_with_cookie("/admin/", &admin.cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains("live/camera/index.m3u8"), "{listed}");

    let updated = app
        .post_form(
            &format!("/admin/channels/{}", channel.id),
            &[
                ("csrf_token", &admin.csrf),
                ("name", "Lab camera"),
                ("slug", "camera"),
                ("description", ""),
                ("poster", ""),
                ("stream_url", "live/lab/index.m3u8"),
            ],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(updated.status(), StatusCode::SEE_OTHER);
    let page = app.get("/live/camera").await.text().await.unwrap();
    assert!(page.contains("Lab camera"));
    assert!(page.contains(r#"data-src="/stream/live/lab/index.m3u8""#));

    let deleted = app
        .post_form(
            &format!("/admin/channels/{}/delete", channel.id),
            &[("csrf_token", &admin.csrf)],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/live/camera").await.status(),
        StatusCode::NOT_FOUND
    );
}

async fn forms_with_a_wrong_csrf_token_are_refused(db: Db) {
    let app = App::start(db).await;
    let admin = app.admin("alice").await;
    let id = app
        .store
        .create_title(&sample_title("sample"))
        .await
        .unwrap();

    let forged = app
        .post_form(
            "/admin/titles",
            &[
                ("csrf_token", "0000"),
                ("title", "Forged"),
                ("stream_url", "vod/x/index.m3u8"),
            ],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.text().await.unwrap().contains("CSRF"));
    let forged = app
        .post_form(
            &format!("/admin/titles/{id}/delete"),
            &[("csrf_token", "")],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Another session's token does not work either.
    app.store.create_admin("bob", PASSWORD).await.unwrap();
    let bob = app.login("bob", PASSWORD).await.expect("bob logs in");
    let crossed = app
        .post_form(
            &format!("/admin/titles/{id}/delete"),
            &[("csrf_token", &bob.csrf)],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(crossed.status(), StatusCode::FORBIDDEN);

    assert_eq!(
        app.store.titles().await.unwrap().len(),
        1,
        "nothing changed"
    );
}

async fn malformed_and_invalid_forms_are_400_and_taken_slugs_409(db: Db) {
    let app = App::start(db).await;
    let admin = app.admin("alice").await;
    app.store
        .create_title(&sample_title("sample"))
        .await
        .unwrap();

    let no_token = app
        .post_form(
            "/admin/titles",
            &[("title", "No token")],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(no_token.status(), StatusCode::BAD_REQUEST);
    assert!(no_token.text().await.unwrap().contains("csrf_token"));

    let invalid = app
        .post_form(
            "/admin/titles",
            &[
                ("csrf_token", &admin.csrf),
                ("title", ""),
                ("slug", "Not A Slug"),
                ("duration", "soon"),
                ("stream_url", "/etc/passwd"),
            ],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    let page = invalid.text().await.unwrap();
    for field in ["title", "slug", "duration", "stream_url"] {
        assert!(
            page.contains(&format!(r#"id="error-{field}""#)),
            "{field}: {page}"
        );
    }
    assert!(
        page.contains(r#"value="Not A Slug""#),
        "the form keeps what was typed"
    );

    let taken = app
        .post_form(
            "/admin/titles",
            &[
                ("csrf_token", &admin.csrf),
                ("title", "Another"),
                ("slug", "sample"),
                ("stream_url", "vod/another/index.m3u8"),
            ],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    assert!(taken
        .text()
        .await
        .unwrap()
        .contains("uses `sample` already"));
    assert_eq!(app.store.titles().await.unwrap().len(), 1);

    let bad_id = app
        .get_with_cookie("/admin/titles/abc/edit", &admin.cookie)
        .await;
    assert_eq!(bad_id.status(), StatusCode::NOT_FOUND);
}

async fn logout_ends_the_session(db: Db) {
    let app = App::start(db).await;
    let admin = app.admin("alice").await;
    let out = app
        .post_form(
            "/admin/logout",
            &[("csrf_token", &admin.csrf)],
            Some(&admin.cookie),
        )
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let cleared = set_cookie_line(out.headers(), "dime_session").expect("cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    let after = app.get_with_cookie("/admin/", &admin.cookie).await;
    assert_eq!(
        after.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is worthless"
    );
    // Without a valid session, a public page is public again.
    assert_eq!(
        cache_control(&app.get_with_cookie("/", &admin.cookie).await),
        "public, max-age=10"
    );
}

async fn health_follows_the_database(db: Db) {
    let app = App::start(db).await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(cache_control(&health), "no-store");
    app.store.close().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
}

async fn concurrent_wrong_logins_are_counted_before_any_password_is_checked(db: Db) {
    let app = App::start(db).await;
    app.store.create_admin("alice", PASSWORD).await.unwrap();
    let mut forms = Vec::new();
    for _ in 0..20 {
        forms.push(app.login_form().await);
    }
    // Twenty wrong passwords at once from one client: only the five the address may try
    // reach the password check, however the requests interleave.
    let mut logins = tokio::task::JoinSet::new();
    for (cookie, token) in forms {
        let request = app
            .client
            .post(app.url("/admin/login"))
            .header("cookie", cookie)
            .form(&[
                ("csrf_token", token.as_str()),
                ("username", "alice"),
                ("password", "wrong guess"),
            ]);
        logins.spawn(async move { request.send().await.expect("POST").status() });
    }
    let statuses = logins.join_all().await;
    let throttled = statuses
        .iter()
        .filter(|&&status| status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let checked = statuses
        .iter()
        .filter(|&&status| status == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(throttled + checked, 20, "{statuses:?}");
    assert!(checked <= 5 && throttled >= 15, "{statuses:?}");
}

async fn oversized_login_fields_are_refused_before_anything_else(db: Db) {
    let app = App::start(db).await;
    app.store.create_admin("alice", PASSWORD).await.unwrap();
    let long_name = "a".repeat(65);
    let long_password = "p".repeat(1025);
    for (username, password) in [
        (long_name.as_str(), "guess"),
        ("alice", long_password.as_str()),
    ]
    .iter()
    .cycle()
    .take(8)
    {
        let refused = app.login(username, password).await.err().expect("refused");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let page = refused.text().await.unwrap();
        assert!(page.contains("at most 64 characters"), "{page}");
        assert!(!page.contains(&long_name), "not echoed back");
    }
    // None of them counted against the client: it logs in at once.
    app.login("alice", PASSWORD).await.expect("not throttled");
}

async fn a_viewer_counts_once_per_entry_per_hour(db: Db) {
    let app = App::start(db).await;
    app.store
        .create_title(&sample_title("sample"))
        .await
        .unwrap();
    app.store.create_channel(&camera()).await.unwrap();
    let view = |path: &'static str, viewer: &'static str| {
        let app = &app;
        async move {
            let response = app.post_with(path, &[("x-forwarded-for", viewer)]).await;
            (response.status(), json(response).await)
        }
    };
    // The first playback of a viewer counts; the same viewer again does not, however often.
    for (viewer, views, counted) in [
        ("198.51.100.1", 1, true),
        ("198.51.100.1", 1, false),
        ("198.51.100.1", 1, false),
        ("198.51.100.2", 2, true),
        ("2001:db8:7:7::1", 3, true),
        // The same IPv6 /64.
        ("2001:db8:7:7::2", 3, false),
    ] {
        let (status, body) = view("/api/views/titles/sample", viewer).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["views"], views, "{viewer}: {body}");
        assert_eq!(body["counted"], counted, "{viewer}: {body}");
    }
    // Another entry counts on its own.
    let (_, body) = view("/api/views/live/camera", "198.51.100.1").await;
    assert_eq!(
        (body["views"].clone(), body["counted"].clone()),
        (1.into(), true.into())
    );
    // An unknown entry is 404 every time.
    for _ in 0..2 {
        let (status, _) = view("/api/views/titles/nope", "198.51.100.1").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let title = app.store.title_by_slug("sample").await.unwrap().unwrap();
    assert_eq!(title.views, 3);
}

/// The trust decision is in memory, the same over either database: SQLite only.
#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    // The edge is elsewhere: this loopback client is not a proxy, whatever it claims.
    let app = App::start_options(
        Db::sqlite().await,
        Options {
            trusted_proxies: TrustedProxies::new(vec!["192.0.2.0/24".parse().unwrap()]),
            ..Options::default()
        },
    )
    .await;
    app.store.create_admin("alice", PASSWORD).await.unwrap();
    for n in 0..5 {
        let forged = format!("198.51.100.{n}");
        let refused = app
            .login_via(Some(&forged), "alice", "guess")
            .await
            .err()
            .expect("refused");
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    // A sixth "client" is the same peer: the five failures counted against it.
    let throttled = app
        .login_via(Some("198.51.100.99"), "alice", PASSWORD)
        .await
        .err()
        .expect("throttled");
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);

    // The view counter keys on the peer too.
    app.store
        .create_title(&sample_title("sample"))
        .await
        .unwrap();
    for viewer in ["198.51.100.1", "198.51.100.2"] {
        app.post_with("/api/views/titles/sample", &[("x-forwarded-for", viewer)])
            .await;
    }
    let title = app.store.title_by_slug("sample").await.unwrap().unwrap();
    assert_eq!(title.views, 1, "one peer, one view");
}
