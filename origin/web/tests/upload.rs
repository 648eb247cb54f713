//! The admin upload form: a video posted from the browser is packaged under the media root
//! and listed in the catalog; forged or broken uploads change nothing.

mod harness;

use std::time::Duration;

use dime_packager::options::Size;
use dime_packager::sample::{write_sample, SampleOptions};
use harness::{cache_control, App, Db};
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;

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
    assert_eq!(uploaded.status(), StatusCode::SEE_OTHER);
    let location = uploaded.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/admin/uploads/"), "{location}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let response = app.get_with_cookie(&location, cookie).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(cache_control(&response), "private, no-store");
        let page = response.text().await.unwrap();
        let state = page
            .split(r#"id="upload-job" data-state=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the job page shows its state")
            .to_owned();
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
    let app = App::start_with(Db::sqlite().await, Some(media.path().to_path_buf())).await;
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
    let app = App::start_with(Db::sqlite().await, Some(media.path().to_path_buf())).await;
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
    let app = App::start_with(Db::sqlite().await, Some(media.path().to_path_buf())).await;
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
