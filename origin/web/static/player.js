// Dime's player: hls.js where Media Source Extensions exist (Chrome, Firefox, Edge), the
// browser's own HLS elsewhere (Safari, iOS). Counts one view per page load, on the first
// `playing` event, so that a page opened and left alone is not a view.
//
// With an edge fleet (`data-bases`: stream bases, best first, from the web app), every
// playlist and segment request goes through a loader that retries the same request on the
// next edge when one fails (no answer, 5xx, timeout), before hls.js sees an error, and then
// stays on the edge that answered: an edge dying mid-play costs no failed request and no
// reload. Safari's own HLS has no loader to wrap: there, a media error moves the whole
// source to the next edge at the same position.
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

  // The stream bases, best first; [] without a fleet.
  function readBases() {
    try {
      var list = JSON.parse(video.getAttribute("data-bases") || "[]");
      return Array.isArray(list)
        ? list.filter(function (b) {
            return typeof b === "string" && b;
          })
        : [];
    } catch (_err) {
      return [];
    }
  }

  // The edge now in use (an index into bases), shared by every request.
  var fleet = { bases: readBases(), current: 0 };

  // The part of `url` after the fleet base it starts with, or null (a URL elsewhere).
  function pathOf(url) {
    for (var i = 0; i < fleet.bases.length; i++) {
      if (url.indexOf(fleet.bases[i]) === 0) {
        return url.slice(fleet.bases[i].length);
      }
    }
    return null;
  }

  // Whether a failed answer is the edge's fault, so another edge may do better: no answer at
  // all (refused, reset, DNS; code 0) or a server error. A 4xx is the same on every edge.
  function edgeFailed(code) {
    return !code || code >= 500;
  }

  // A copy of hls.js's load config without its own retries: while another edge is left to
  // try, moving on beats retrying a dead one with back-off. The last edge keeps them.
  function withoutRetries(loadConfig) {
    var copy = {};
    var key;
    for (key in loadConfig) {
      copy[key] = loadConfig[key];
    }
    if (loadConfig.loadPolicy) {
      var policy = {};
      for (key in loadConfig.loadPolicy) {
        policy[key] = loadConfig.loadPolicy[key];
      }
      policy.errorRetry = null;
      policy.timeoutRetry = null;
      copy.loadPolicy = policy;
    }
    copy.maxRetry = 0;
    return copy;
  }

  // hls.js loader (playlists and segments alike) wrapping its default one; see the top.
  function failoverLoader(Base) {
    function FailoverLoader(config) {
      this.config = config;
      this.inner = new Base(config);
      this.aborted = false;
    }
    Object.defineProperty(FailoverLoader.prototype, "stats", {
      get: function () {
        return this.inner.stats;
      },
    });
    Object.defineProperty(FailoverLoader.prototype, "context", {
      get: function () {
        return this.inner.context;
      },
    });
    FailoverLoader.prototype.load = function (context, loadConfig, callbacks) {
      var self = this;
      var path = pathOf(context.url);
      var count = path === null ? 1 : fleet.bases.length;
      var first = fleet.current;
      var attempt = 0;
      function tryNext() {
        var edge = (first + attempt) % fleet.bases.length;
        var last = attempt === count - 1;
        if (path !== null) {
          context.url = fleet.bases[edge] + path;
        }
        if (attempt > 0) {
          self.inner.destroy();
          self.inner = new Base(self.config);
        }
        // Another edge follows when this one fails: the error or timeout goes there.
        function moveOn(report) {
          return function () {
            if (self.aborted) {
              return;
            }
            if (last) {
              report.apply(null, arguments);
              return;
            }
            attempt += 1;
            tryNext();
          };
        }
        self.inner.load(context, last ? loadConfig : withoutRetries(loadConfig), {
          onSuccess: function (response, stats, ctx, details) {
            if (path !== null && fleet.current !== edge) {
              // Stay on the edge that answered for every later request.
              fleet.current = edge;
              say("");
            }
            callbacks.onSuccess(response, stats, ctx, details);
          },
          onError: function (error, ctx, details, stats) {
            if (!edgeFailed(error && error.code)) {
              callbacks.onError(error, ctx, details, stats);
              return;
            }
            moveOn(callbacks.onError).call(null, error, ctx, details, stats);
          },
          onTimeout: moveOn(callbacks.onTimeout),
          onAbort: callbacks.onAbort,
          onProgress: callbacks.onProgress,
        });
      }
      tryNext();
    };
    FailoverLoader.prototype.abort = function () {
      this.aborted = true;
      this.inner.abort();
    };
    FailoverLoader.prototype.destroy = function () {
      this.aborted = true;
      this.inner.destroy();
    };
    FailoverLoader.prototype.getCacheAge = function () {
      return this.inner.getCacheAge ? this.inner.getCacheAge() : null;
    };
    FailoverLoader.prototype.getResponseHeader = function (name) {
      return this.inner.getResponseHeader ? this.inner.getResponseHeader(name) : null;
    };
    return FailoverLoader;
  }

  var src = video.getAttribute("data-src");
  var live = video.getAttribute("data-live") === "true";
  if (window.Hls && window.Hls.isSupported()) {
    // Live: low-latency HLS where the playlist offers it (parts, blocking reloads), and a
    // little faster playback (up to 1.2x) to reach the channel's target latency again after
    // the start, which waits for an independent part, or after a stall.
    var options = { lowLatencyMode: live };
    if (live) {
      options.maxLiveSyncPlaybackRate = 1.2;
    }
    if (fleet.bases.length > 1) {
      options.loader = failoverLoader(window.Hls.DefaultConfig.loader);
    }
    var hls = new window.Hls(options);
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
    var path = pathOf(src);
    var moved = 0;
    video.addEventListener("error", function () {
      if (path === null || moved >= fleet.bases.length - 1) {
        say("Playback failed.");
        return;
      }
      moved += 1;
      fleet.current = (fleet.current + 1) % fleet.bases.length;
      var at = video.currentTime;
      video.src = fleet.bases[fleet.current] + path;
      video.addEventListener(
        "loadedmetadata",
        function () {
          if (!live && at > 0) {
            video.currentTime = at;
          }
        },
        { once: true }
      );
      start();
    });
    start();
  } else {
    say("This browser cannot play HLS video.");
    return;
  }

  // Live: how far behind the camera the picture is, from the frame's program date-time
  // (EXT-X-PROGRAM-DATE-TIME, stamped at capture) against this clock, twice a second. Also in
  // the video's data-latency attribute, in seconds, for tests.
  var latencyText = document.getElementById("player-latency");
  if (live && latencyText) {
    setInterval(function () {
      var shown = null;
      if (typeof hls !== "undefined" && hls.playingDate) {
        shown = hls.playingDate.getTime();
      } else if (typeof video.getStartDate === "function") {
        var begin = video.getStartDate().getTime();
        if (!isNaN(begin)) {
          shown = begin + video.currentTime * 1000;
        }
      }
      if (shown === null || video.paused) {
        return;
      }
      var seconds = Math.max(0, (Date.now() - shown) / 1000);
      video.setAttribute("data-latency", seconds.toFixed(2));
      latencyText.textContent = "Latency: " + seconds.toFixed(1) + " s behind the camera";
      latencyText.hidden = false;
    }, 500);
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
