// Dime's player: hls.js where Media Source Extensions exist (Chrome, Firefox, Edge), the
// browser's own HLS elsewhere (Safari, iOS). Counts one view per page load, on the first
// `playing` event, so that a page opened and left alone is not a view.
(function () {
  "use strict";
  var video = document.getElementById("player");
  if (!video) {
    return;
  }
  var status = document.getElementById("player-status");
  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  // Starts playback, with sound where the browser allows autoplay, muted where it only
  // allows muted autoplay (the viewer unmutes with the controls).
  function start() {
    var started = video.play();
    if (!started || typeof started.catch !== "function") {
      return;
    }
    started.catch(function (err) {
      if (!err || err.name !== "NotAllowedError") {
        return;
      }
      video.muted = true;
      video.play().catch(function () {
        say("Press play to start.");
      });
    });
  }

  var src = video.getAttribute("data-src");
  var live = video.getAttribute("data-live") === "true";
  if (window.Hls && window.Hls.isSupported()) {
    var hls = new window.Hls({ lowLatencyMode: live });
    hls.on(window.Hls.Events.ERROR, function (_event, data) {
      if (data.fatal) {
        say("Playback failed: " + data.details);
      }
    });
    hls.on(window.Hls.Events.MANIFEST_PARSED, start);
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = src;
    start();
  } else {
    say("This browser cannot play HLS video.");
    return;
  }

  var counted = false;
  video.addEventListener("playing", function () {
    if (counted) {
      return;
    }
    counted = true;
    fetch(video.getAttribute("data-views-url"), { method: "POST" })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        var views = document.getElementById("views");
        if (body && typeof body.views === "number" && views) {
          views.textContent = String(body.views);
        }
      })
      .catch(function () {
        // A lost count must not disturb playback.
      });
  });
})();
