// What hls.js itself sees, for the browser tests (failover.test.mjs, ansible/sim's): installed
// before the page's scripts run, it wraps Hls.prototype.trigger as soon as the page defines
// window.Hls, and records every ERROR event and counts FRAG_LOADED in window.__hls.

/** Makes `page` record hls.js's errors and loaded fragments in `window.__hls`. */
export async function watchHls(page) {
  await page.addInitScript(() => {
    window.__hls = { errors: [], fragsLoaded: 0 };
    let Hls;
    Object.defineProperty(window, 'Hls', {
      configurable: true,
      get: () => Hls,
      set: (value) => {
        Hls = value;
        const trigger = value.prototype.trigger;
        value.prototype.trigger = function (event, data) {
          if (event === value.Events.ERROR) {
            window.__hls.errors.push({ details: data.details, fatal: data.fatal, url: data.frag?.url || data.url });
          } else if (event === value.Events.FRAG_LOADED) {
            window.__hls.fragsLoaded += 1;
          }
          return trigger.apply(this, arguments);
        };
      },
    });
  });
}
