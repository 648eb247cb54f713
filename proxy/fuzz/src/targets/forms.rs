//! The web app's admin forms: a posted body decoded as axum's `Form` does, then validated.
//!
//! Properties: decoding and validation never panic; a valid title or channel has a valid slug,
//! a trimmed non-empty name, locations that pass the location check and a duration that is not
//! negative; its fields posted again validate to the same fields; any slug `slugify` makes is
//! valid or empty.

use dime_web::forms::{check_location, slugify, valid_slug, ChannelForm, TitleForm};
use dime_web::http::admin::login::LoginForm;
use dime_web::http::admin::session::{CsrfOnly, Posted};

pub fn check(data: &[u8]) {
    let _ = serde_urlencoded::from_bytes::<LoginForm>(data);
    let _ = serde_urlencoded::from_bytes::<CsrfOnly>(data);
    if let Ok(posted) = serde_urlencoded::from_bytes::<Posted<TitleForm>>(data) {
        title(&posted.fields);
    }
    if let Ok(posted) = serde_urlencoded::from_bytes::<Posted<ChannelForm>>(data) {
        channel(&posted.fields);
    }
    if let Some(text) = crate::text(data) {
        let slug = slugify(text);
        assert!(
            slug.is_empty() || valid_slug(&slug),
            "slugify({text:?}) = {slug:?}"
        );
    }
}

fn title(form: &TitleForm) {
    let Ok(fields) = form.validate() else {
        return;
    };
    common(
        &fields.title,
        &fields.slug,
        fields.poster.as_deref(),
        &fields.stream_url,
    );
    if let Some(ms) = fields.duration_ms {
        assert!(ms >= 0, "duration {ms} ms from {:?}", form.duration);
    }
    let again = TitleForm {
        title: fields.title.clone(),
        slug: fields.slug.clone(),
        description: fields.description.clone(),
        poster: fields.poster.clone().unwrap_or_default(),
        // Seconds with milliseconds, where an f64 holds them exactly.
        duration: match fields.duration_ms {
            Some(ms) if ms < 1 << 40 => format!("{}.{:03}", ms / 1000, ms % 1000),
            _ => String::new(),
        },
        stream_url: fields.stream_url.clone(),
    };
    let second = again.validate().expect("valid fields posted again");
    assert_eq!(
        (
            &second.title,
            &second.slug,
            &second.description,
            &second.poster,
            &second.stream_url
        ),
        (
            &fields.title,
            &fields.slug,
            &fields.description,
            &fields.poster,
            &fields.stream_url
        )
    );
    if fields.duration_ms.is_some_and(|ms| ms < 1 << 40) {
        assert_eq!(second.duration_ms, fields.duration_ms);
    }
}

fn channel(form: &ChannelForm) {
    let Ok(fields) = form.validate() else {
        return;
    };
    common(
        &fields.name,
        &fields.slug,
        fields.poster.as_deref(),
        &fields.stream_url,
    );
    let again = ChannelForm {
        name: fields.name.clone(),
        slug: fields.slug.clone(),
        description: fields.description.clone(),
        poster: fields.poster.clone().unwrap_or_default(),
        stream_url: fields.stream_url.clone(),
    };
    let second = again.validate().expect("valid fields posted again");
    assert_eq!(
        (
            &second.name,
            &second.slug,
            &second.description,
            &second.poster,
            &second.stream_url
        ),
        (
            &fields.name,
            &fields.slug,
            &fields.description,
            &fields.poster,
            &fields.stream_url
        )
    );
}

fn common(name: &str, slug: &str, poster: Option<&str>, stream_url: &str) {
    assert!(!name.is_empty() && name.trim() == name, "name {name:?}");
    assert!(valid_slug(slug), "slug {slug:?}");
    assert!(
        check_location(stream_url).is_ok(),
        "stream_url {stream_url:?}"
    );
    if let Some(poster) = poster {
        assert!(check_location(poster).is_ok(), "poster {poster:?}");
    }
}
