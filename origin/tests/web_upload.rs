//! The admin upload form: a video posted from the browser is packaged under the media root
//! and listed in the catalog; forged or broken uploads change nothing. Here rather than in
//! dime-web's tests because uploads are packaged by a `dime-origin packager` child process.

use std::time::Duration;

use dime_origin_testing::web::{cache_control, App, Db};
use dime_packager::options::Size;
use dime_packager::sample::{write_sample, SampleOptions};
use dime_web::http::upload::UploadLimits;
use dime_web::packaging_child::PackagerLimits;
use dime_web::{MediaBase, Options};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_dime-origin");

/// Upload limits for tests: this build's packager, no free-space floor.
fn limits() -> UploadLimits {
    UploadLimits {
        min_free_bytes: 0,
        packager: PackagerLimits {
            program: Some(BIN.into()),
            ..PackagerLimits::default()
        },
        ..UploadLimits::default()
    }
}

/// The app over SQLite with uploads into `media` under `limits`.
async fn start(media: &std::path::Path, limits: UploadLimits) -> App {
    App::start_options(
        Db::sqlite().await,
        Options {
            media_base: MediaBase::new("/stream/").unwrap(),
            media_root: Some(media.to_path_buf()),
            upload_limits: limits,
            ..Options::default()
        },
    )
    .await
}

/// A two-second 320x180 clip.
async fn clip() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    let options = SampleOptions {
        duration: Duration::from_secs(2),
        size: Size {
            width: 320,
            height: 180,
        },
        fps: 15,
        audio: false,
    };
    let out = path.clone();
    tokio::task::spawn_blocking(move || write_sample(&out, &options))
        .await
        .unwrap()
        .expect("write the sample clip");
    std::fs::read(path).unwrap()
}

fn upload_form(csrf: &str, title: &str, file: Vec<u8>) -> Form {
    Form::new()
        .text("csrf_token", csrf.to_owned())
        .text("title", title.to_owned())
        .text("slug", "")
        .text("description", "Uploaded from a browser.")
        .part("file", Part::bytes(file).file_name("holiday.mp4"))
}

async fn post_upload(app: &App, cookie: &str, form: Form) -> reqwest::Response {
    app.client
        .post(app.url("/admin/titles/upload"))
        .header("cookie", cookie)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Follows an upload's job page (where the upload redirected to) until packaging has ended;
/// returns the final state (`done` or `failed`) and the page.
async fn wait_for_job(app: &App, cookie: &str, uploaded: &reqwest::Response) -> (String, String) {
    wait_for_job_at(app, cookie, &job_page(uploaded)).await
}

/// Where an upload redirected to: its job page.
fn job_page(uploaded: &reqwest::Response) -> String {
    assert_eq!(uploaded.status(), StatusCode::SEE_OTHER);
    let location = uploaded.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/admin/uploads/"), "{location}");
    location
}

/// The state shown on a job page.
fn job_state(page: &str) -> String {
    page.split(r#"id="upload-job" data-state=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the job page shows its state")
        .to_owned()
}

/// Follows the job page at `location` until packaging has ended; returns the final state
/// and the page.
async fn wait_for_job_at(app: &App, cookie: &str, location: &str) -> (String, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let response = app.get_with_cookie(location, cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(cache_control(&response), "private, no-store");
        let page = response.text().await.unwrap();
        let state = job_state(&page);
        if state != "packaging" {
            return (state, page);
        }
        assert!(
            page.contains(r#"<meta http-equiv="refresh""#),
            "a running job's page reloads itself"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "packaging never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_uploaded_video_is_packaged_under_the_media_root_and_listed() {
    let media = tempfile::tempdir().unwrap();
    let app = start(media.path(), limits()).await;
    let admin = app.admin("alice").await;

    let form = app
        .get_with_cookie("/admin/titles/upload", &admin.cookie)
        .await;
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(cache_control(&form), "private, no-store");
    assert!(form
        .text()
        .await
        .unwrap()
        .contains(r#"enctype="multipart/form-data""#));

    let uploaded = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Holiday 2025", clip().await),
    )
    .await;
    let (state, page) = wait_for_job(&app, &admin.cookie, &uploaded).await;
    assert_eq!(state, "done", "{page}");
    assert!(page.contains(r#"href="/titles/holiday-2025""#), "{page}");
    let index = app.get_with_cookie("/admin/", &admin.cookie).await;
    let index = index.text().await.unwrap();
    assert!(
        index.contains(r#"id="admin-uploads""#) && index.contains("Holiday 2025"),
        "the admin list shows the upload: {index}"
    );

    let title = app
        .store
        .title_by_slug("holiday-2025")
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(title.stream_url, "vod/holiday-2025/index.m3u8");
    assert_eq!(title.poster.as_deref(), Some("vod/holiday-2025/poster.jpg"));
    assert!(
        title.duration_ms.is_some_and(|ms| ms >= 1500),
        "{:?}",
        title.duration_ms
    );
    assert!(media.path().join("vod/holiday-2025/index.m3u8").is_file());
    assert!(media.path().join("vod/holiday-2025/poster.jpg").is_file());
    let leftovers = std::fs::read_dir(media.path().join(".uploads"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "the uploaded file is removed once packaged");

    let page = app.get("/titles/holiday-2025").await.text().await.unwrap();
    assert!(page.contains(r#"data-src="/stream/vod/holiday-2025/index.m3u8""#));
}

#[tokio::test]
async fn forged_broken_and_duplicate_uploads_change_nothing() {
    let media = tempfile::tempdir().unwrap();
    let app = start(media.path(), limits()).await;
    let admin = app.admin("alice").await;

    let forged = post_upload(
        &app,
        &admin.cookie,
        upload_form("0000", "Forged", b"x".to_vec()),
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    let not_video = post_upload(
        &app,
        &admin.cookie,
        upload_form(
            &admin.csrf,
            "Notes",
            b"these are not moving pictures".to_vec(),
        ),
    )
    .await;
    assert_eq!(not_video.status(), StatusCode::BAD_REQUEST);
    let page = not_video.text().await.unwrap();
    assert!(page.contains(r#"id="error-file""#), "{page}");
    assert!(
        page.contains(r#"value="Notes""#),
        "the form keeps what was typed"
    );

    let clip = clip().await;
    let first = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Twice", clip.clone()),
    )
    .await;
    // The same slug again while the first packages, then once it is listed: both refused.
    let second = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Twice", clip.clone()),
    )
    .await;
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(wait_for_job(&app, &admin.cookie, &first).await.0, "done");
    let third = post_upload(&app, &admin.cookie, upload_form(&admin.csrf, "Twice", clip)).await;
    assert_eq!(third.status(), StatusCode::CONFLICT);

    let slugs: Vec<_> = app
        .store
        .titles()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.slug)
        .collect();
    assert_eq!(slugs, ["twice"]);
    assert!(!media.path().join("vod/notes").exists());
    assert_eq!(
        std::fs::read_dir(media.path().join(".uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn a_job_page_needs_a_session_and_an_existing_job() {
    let media = tempfile::tempdir().unwrap();
    let app = start(media.path(), limits()).await;
    let admin = app.admin("alice").await;
    let unknown = app
        .get_with_cookie("/admin/uploads/99", &admin.cookie)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.text().await.unwrap().contains("No such upload"));

    let uploaded = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Private", clip().await),
    )
    .await;
    let location = uploaded.headers()["location"].to_str().unwrap().to_owned();
    let anonymous = app.get(&location).await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()["location"], "/admin/login");
    assert_eq!(wait_for_job(&app, &admin.cookie, &uploaded).await.0, "done");
}

#[tokio::test]
async fn without_a_media_root_there_is_no_upload_form() {
    let app = App::start(Db::sqlite().await).await;
    let admin = app.admin("alice").await;
    let index = app
        .get_with_cookie("/admin/", &admin.cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(!index.contains("/admin/titles/upload"));
    let form = app
        .get_with_cookie("/admin/titles/upload", &admin.cookie)
        .await;
    assert_eq!(form.status(), StatusCode::NOT_FOUND);
    assert!(form.text().await.unwrap().contains("--media-root"));
}

/// A `seconds`-long 1280x720 clip: enough work to outlast a one-second CPU limit.
async fn long_clip(seconds: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.mp4");
    let options = SampleOptions {
        duration: Duration::from_secs(seconds),
        size: Size {
            width: 1280,
            height: 720,
        },
        fps: 30,
        audio: false,
    };
    let out = path.clone();
    tokio::task::spawn_blocking(move || write_sample(&out, &options))
        .await
        .unwrap()
        .expect("write the long clip");
    std::fs::read(path).unwrap()
}

/// Files and directories directly in `dir` (none when it does not exist).
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn a_packager_over_its_time_limit_fails_its_job_and_the_app_keeps_serving() {
    let media = tempfile::tempdir().unwrap();
    let mut limits = limits();
    limits.packager.cpu_secs = 1;
    let app = start(media.path(), limits).await;
    let admin = app.admin("alice").await;

    let uploaded = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Heavy", long_clip(8).await),
    )
    .await;
    let (state, page) = wait_for_job(&app, &admin.cookie, &uploaded).await;
    assert_eq!(state, "failed", "{page}");
    assert!(page.contains("time limit (1 s)"), "{page}");
    // Only the child was stopped: the app answers, nothing was listed or left behind.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert!(app.store.title_by_slug("heavy").await.unwrap().is_none());
    assert_eq!(entries(&media.path().join("vod")), Vec::<String>::new());
    assert_eq!(
        entries(&media.path().join(".uploads")),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_packager_that_cannot_live_in_its_memory_limit_fails_its_job_and_the_app_keeps_serving() {
    let media = tempfile::tempdir().unwrap();
    let mut limits = limits();
    // Far below what the program and GStreamer's libraries take to load, on any machine:
    // the limit is applied to the child, and only the child suffers from it.
    limits.packager.memory_bytes = 16 << 20;
    let app = start(media.path(), limits).await;
    let admin = app.admin("alice").await;

    let uploaded = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Starved", clip().await),
    )
    .await;
    let (state, page) = wait_for_job(&app, &admin.cookie, &uploaded).await;
    assert_eq!(state, "failed", "{page}");
    assert!(page.contains("the packager"), "{page}");
    assert!(
        !page.contains("not a video"),
        "a limit is not the file's fault: {page}"
    );
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert!(app.store.title_by_slug("starved").await.unwrap().is_none());
    assert_eq!(entries(&media.path().join("vod")), Vec::<String>::new());
}

#[tokio::test]
async fn uploads_over_the_size_limit_or_the_free_space_floor_are_refused_before_writing() {
    let media = tempfile::tempdir().unwrap();
    let mut small = limits();
    small.max_bytes = 64 << 10;
    let app = start(media.path(), small).await;
    let admin = app.admin("alice").await;
    let big = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Big", vec![7; 200 << 10]),
    )
    .await;
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(big.text().await.unwrap().contains("upload limit"));
    assert_eq!(
        entries(&media.path().join(".uploads")),
        Vec::<String>::new()
    );

    let media = tempfile::tempdir().unwrap();
    let mut floor = limits();
    floor.min_free_bytes = u64::MAX / 2;
    let app = start(media.path(), floor).await;
    let admin = app.admin("alice").await;
    let full = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Full", clip().await),
    )
    .await;
    assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
    let page = full.text().await.unwrap();
    assert!(page.contains("Not enough free space"), "{page}");
    assert!(!page.contains(media.path().to_str().unwrap()), "{page}");
    assert!(!media.path().join(".uploads").exists(), "nothing written");
}

#[tokio::test]
async fn uploads_beyond_the_concurrency_limit_are_429() {
    use tokio::io::AsyncWriteExt as _;
    let media = tempfile::tempdir().unwrap();
    let mut one = limits();
    one.max_concurrent = 1;
    let app = start(media.path(), one).await;
    let admin = app.admin("alice").await;

    // An upload that is still arriving holds the one slot.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /admin/titles/upload HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 1000000\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{}\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.mp4\"\r\n\r\n",
        app.addr, admin.cookie, admin.csrf
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&[0; 4096]).await.unwrap();
    let uploads = media.path().join(".uploads");
    for _ in 0..200 {
        if !entries(&uploads).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        entries(&uploads).len(),
        1,
        "the slow upload is being written"
    );

    let second = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Second", clip().await),
    )
    .await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second
        .text()
        .await
        .unwrap()
        .contains("1 uploads are being received"));

    // The slow client goes away: its slot and its partial file go too.
    drop(slow);
    let mut status = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..200 {
        let retry = post_upload(
            &app,
            &admin.cookie,
            upload_form(&admin.csrf, "Third", b"not a video".to_vec()),
        )
        .await;
        status = retry.status();
        if status != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, StatusCode::BAD_REQUEST, "the slot was freed");
    assert_eq!(entries(&uploads), Vec::<String>::new());
}

#[tokio::test]
async fn leftovers_of_a_crash_are_removed_at_start() {
    let media = tempfile::tempdir().unwrap();
    let root = media.path();
    std::fs::create_dir_all(root.join(".uploads")).unwrap();
    std::fs::write(root.join(".uploads/abc.upload"), b"half an upload").unwrap();
    std::fs::create_dir_all(root.join("vod/.film.packaging-4242-0")).unwrap();
    std::fs::write(root.join("vod/.film.packaging-4242-0/segment-0.ts"), b"x").unwrap();
    std::fs::create_dir_all(root.join("vod/kept")).unwrap();
    std::fs::write(root.join("vod/kept/index.m3u8"), b"#EXTM3U\n").unwrap();

    let _app = start(root, limits()).await;
    assert_eq!(entries(&root.join(".uploads")), Vec::<String>::new());
    assert_eq!(entries(&root.join("vod")), ["kept"]);
    assert!(root.join("vod/kept/index.m3u8").is_file());
}

#[tokio::test]
async fn failure_messages_shown_to_the_admin_name_no_paths() {
    let media = tempfile::tempdir().unwrap();
    let root = media.path().to_str().unwrap().to_owned();
    // A title directory on disk that the catalog does not know: packaging must refuse it.
    std::fs::create_dir_all(media.path().join("vod/twice")).unwrap();
    let app = start(media.path(), limits()).await;
    let admin = app.admin("alice").await;
    let uploaded = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Twice", clip().await),
    )
    .await;
    let (state, page) = wait_for_job(&app, &admin.cookie, &uploaded).await;
    assert_eq!(state, "failed", "{page}");
    assert!(
        page.contains("exists already on the media volume"),
        "{page}"
    );
    assert!(!page.contains(&root), "{page}");

    // The upload directory cannot be made: a 500 that names no path either.
    std::fs::remove_dir_all(media.path().join(".uploads")).unwrap();
    std::fs::write(media.path().join(".uploads"), b"in the way").unwrap();
    let broken = post_upload(
        &app,
        &admin.cookie,
        upload_form(&admin.csrf, "Other", clip().await),
    )
    .await;
    assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let page = broken.text().await.unwrap();
    assert!(page.contains("Cannot store the upload"), "{page}");
    assert!(!page.contains(&root), "{page}");
}

/// One replica of the web app: a `dime-origin web` process of its own, killed on drop.
struct Replica {
    child: std::process::Child,
    app: App,
}

impl Replica {
    /// Serves `db` with uploads into `media`; replicas silent for `timeout` are taken as dead.
    async fn start(db: &str, media: &std::path::Path, timeout: Duration) -> Self {
        let port = dime_test_ports::free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = std::process::Command::new(BIN)
            .args(["web", "--listen", &addr.to_string(), "--db", db])
            .arg("--media-root")
            .arg(media)
            .args(["--upload-min-free", "0", "--replica-timeout"])
            .arg(timeout.as_secs().to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start dime-origin web");
        let store = dime_web::Store::open(db).await.expect("open the database");
        let mut replica = Self {
            child,
            app: App::attach(addr, store),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while replica
            .app
            .client
            .get(replica.app.url("/healthz"))
            .send()
            .await
            .is_err()
        {
            if let Ok(Some(status)) = replica.child.try_wait() {
                panic!("the replica exited: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    /// SIGKILL: the replica stops at once, with no chance to tidy up.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a replica may be silent before the others take its jobs as failed, in tests.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_job_is_followed_on_any_replica_and_failed_and_cleaned_by_another_when_its_replica_dies()
{
    let db = Db::postgres().await;
    let media = tempfile::tempdir().unwrap();
    let (short, long) = (clip().await, long_clip(40).await);
    let mut a = Replica::start(&db.url(), media.path(), REPLICA_TIMEOUT).await;
    let b = Replica::start(&db.url(), media.path(), REPLICA_TIMEOUT).await;
    // Sessions live in the database: one login works on every replica.
    let admin = a.app.admin("alice").await;

    let uploaded = post_upload(
        &a.app,
        &admin.cookie,
        upload_form(&admin.csrf, "Long film", long),
    )
    .await;
    let location = job_page(&uploaded);
    let on_b = b.app.get_with_cookie(&location, &admin.cookie).await;
    assert_eq!(
        on_b.status(),
        StatusCode::OK,
        "the same job page on the other replica"
    );
    let page = on_b.text().await.unwrap();
    assert_eq!(job_state(&page), "packaging", "{page}");
    assert!(page.contains("Upload: Long film"), "{page}");
    assert!(page.contains("<code>long-film</code>"), "{page}");
    let list = b
        .app
        .get_with_cookie("/admin/", &admin.cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains(&format!(r#"href="{location}""#)), "{list}");

    // The slug is taken while A packages it, whichever replica is asked.
    let twice = post_upload(
        &b.app,
        &admin.cookie,
        upload_form(&admin.csrf, "Long film", short.clone()),
    )
    .await;
    assert_eq!(twice.status(), StatusCode::CONFLICT);

    // A dies mid-packaging, its work directory half written.
    let vod = media.path().join("vod");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !entries(&vod)
        .iter()
        .any(|name| name.starts_with(".long-film.packaging-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "packaging never started: {:?}",
            entries(&vod)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        job_state(
            &b.app
                .get_with_cookie(&location, &admin.cookie)
                .await
                .text()
                .await
                .unwrap()
        ),
        "packaging"
    );
    a.kill();
    let killed = std::time::Instant::now();

    let (state, page) = wait_for_job_at(&b.app, &admin.cookie, &location).await;
    let noticed = killed.elapsed();
    assert_eq!(state, "failed", "{page}");
    assert!(page.contains("the replica packaging it stopped"), "{page}");
    // The bound, a heartbeat and a sweep late at most, and some slack for a busy machine.
    assert!(
        noticed < REPLICA_TIMEOUT + Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    assert_eq!(
        entries(&vod),
        Vec::<String>::new(),
        "the partial output is gone"
    );
    assert_eq!(
        entries(&media.path().join(".uploads")),
        Vec::<String>::new(),
        "and the upload too"
    );
    assert!(b
        .app
        .store
        .title_by_slug("long-film")
        .await
        .unwrap()
        .is_none());

    // The slug is free again.
    let again = post_upload(
        &b.app,
        &admin.cookie,
        upload_form(&admin.csrf, "Long film", short),
    )
    .await;
    assert_eq!(wait_for_job(&b.app, &admin.cookie, &again).await.0, "done");
    assert!(vod.join("long-film/index.m3u8").is_file());
}

#[tokio::test]
async fn two_replicas_never_package_the_same_slug_at_once() {
    let db = Db::postgres().await;
    let media = tempfile::tempdir().unwrap();
    let short = clip().await;
    let a = Replica::start(&db.url(), media.path(), REPLICA_TIMEOUT).await;
    let b = Replica::start(&db.url(), media.path(), REPLICA_TIMEOUT).await;
    let admin = a.app.admin("alice").await;

    let (first, second) = tokio::join!(
        post_upload(
            &a.app,
            &admin.cookie,
            upload_form(&admin.csrf, "Same", short.clone())
        ),
        post_upload(
            &b.app,
            &admin.cookie,
            upload_form(&admin.csrf, "Same", short.clone())
        ),
    );
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::SEE_OTHER, StatusCode::CONFLICT]);
    let (winner, app) = if first.status() == StatusCode::SEE_OTHER {
        (first, &a.app)
    } else {
        (second, &b.app)
    };
    assert_eq!(wait_for_job(app, &admin.cookie, &winner).await.0, "done");
    let slugs: Vec<_> = a
        .app
        .store
        .titles()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.slug)
        .collect();
    assert_eq!(slugs, ["same"]);
}

#[tokio::test]
async fn a_replica_stopped_gracefully_fails_its_jobs_at_once_and_removes_their_leftovers() {
    let db = Db::postgres().await;
    let media = tempfile::tempdir().unwrap();
    let long = long_clip(20).await;
    // A timeout no sweep reaches within this test: only the stop itself can end the job.
    let mut a = Replica::start(&db.url(), media.path(), Duration::from_secs(600)).await;
    let admin = a.app.admin("alice").await;
    let uploaded = post_upload(
        &a.app,
        &admin.cookie,
        upload_form(&admin.csrf, "Rolling", long),
    )
    .await;
    let id: i64 = job_page(&uploaded)
        .trim_start_matches("/admin/uploads/")
        .parse()
        .unwrap();
    let vod = media.path().join("vod");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !entries(&vod)
        .iter()
        .any(|name| name.starts_with(".rolling.packaging-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "packaging never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What Kubernetes does on a rolling update.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = a.child.wait().unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");

    let job = a.app.store.job(id).await.unwrap().expect("the job is kept");
    match &job.state {
        dime_web::packaging_jobs::JobState::Failed { reason } => {
            assert!(reason.contains("was stopped"), "{reason}")
        }
        other => panic!("the job is not failed at once: {other:?}"),
    }
    assert_eq!(entries(&vod), Vec::<String>::new());
    assert_eq!(
        entries(&media.path().join(".uploads")),
        Vec::<String>::new()
    );
}
