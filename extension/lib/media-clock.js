// One media clock for a whole analysis, whatever happens to its sources and connections.
//
// The server's session clock starts at the first chunk's timestamp and then follows the audio's
// samples; audio stamped later than its samples say opens a gap, and a video frame more than
// limits.max_lead_s ahead of the clock is refused (docs/protocol.md). So audio and video must be
// stamped from one clock, and that clock must survive a reconnect, a brand-new session, a new
// document (navigation) and a paused video:
//  - audio is placed by its sample count inside a *segment* (one run of one audio source); a new
//    segment starts where the clock stands (`rebase`), after a gap as long as the wall time that
//    passed (a navigation) or without one (a paused video resumed: analysis time stood still);
//  - video is stamped from the last audio frame: its end plus the wall time since it arrived,
//    so video never drifts away from the audio however the two sources are captured;
//  - without audio, video follows the wall clock from the segment's start.
// Wall times are epoch milliseconds (performance.timeOrigin + performance.now(), or Date.now()),
// which agree across the extension's contexts (content script, offscreen document).

export const MAX_VIDEO_LEAD_S = 4; // under the server's max_lead_s (5 s)

export class MediaClock {
  constructor({ rate = 16000 } = {}) {
    this.rate = rate;
    this.endT = 0; // seconds: the end of the last audio frame stamped
    this.anchor = null; // {t, wallMs}: media time t was reached at wall time wallMs
    this.offset = null; // seconds: t = offset + startSample / rate in the current audio segment
    this.segmentT = 0; // where the current segment starts
    this.lastVideoT = -Infinity;
    this.hasAudio = false;
    this.paused = false;
    this.segments = 0;
  }

  /** Media time due at `wallMs` (seconds): frozen while paused. */
  at(wallMs) {
    if (!this.anchor) return this.endT;
    if (this.paused) return this.anchor.t;
    return this.anchor.t + Math.max(0, wallMs - this.anchor.wallMs) / 1000;
  }

  /**
   * A new run of the sources (a new capture, a new document): the next audio frame starts at the
   * clock's current time, `wallMs` of wall time after the last audio (`gap: true`), or exactly
   * where the audio ended (`gap: false`).
   */
  rebase(wallMs, { gap = true } = {}) {
    const t = gap ? Math.max(this.endT, this.at(wallMs)) : Math.max(this.endT, this.anchor?.t ?? 0);
    this.segmentT = t;
    this.offset = null;
    this.anchor = { t, wallMs };
    this.paused = false;
    this.segments += 1;
    return t;
  }

  /** Analysis stops (the video is paused): the clock stands still until `resume`. */
  pause(wallMs) {
    if (this.paused) return;
    if (this.anchor) this.anchor = { t: Math.max(this.endT, this.at(wallMs)), wallMs };
    this.paused = true;
  }

  /** Analysis goes on where it stopped, without a gap. */
  resume(wallMs) {
    if (!this.paused) return;
    this.paused = false;
    this.rebase(wallMs, { gap: false });
  }

  /**
   * Timestamp (µs) of an audio frame of `samples` samples starting at `startSample` of its
   * source, which arrived at `wallMs` (its end).
   */
  audio(startSample, samples, wallMs) {
    if (!this.anchor) this.anchor = { t: 0, wallMs: wallMs - (1000 * samples) / this.rate };
    const start = startSample / this.rate;
    if (this.offset === null) this.offset = this.segmentT - start;
    let t = this.offset + start;
    if (t < this.endT - 0.05) {
      // the samples went back without a rebase (a new source): continue where the audio ended
      this.offset = this.endT - start;
      t = this.endT;
    }
    const end = t + samples / this.rate;
    this.endT = Math.max(this.endT, end);
    this.anchor = { t: end, wallMs };
    this.hasAudio = true;
    return Math.round(t * 1e6);
  }

  /** Timestamp (µs) of a video frame taken at `wallMs`. */
  video(wallMs) {
    if (!this.anchor) this.anchor = { t: this.endT, wallMs };
    let t = this.anchor.t + (wallMs - this.anchor.wallMs) / 1000;
    if (this.hasAudio) t = Math.min(t, this.endT + MAX_VIDEO_LEAD_S);
    t = Math.max(0, t, this.lastVideoT + 0.001);
    this.lastVideoT = t;
    return Math.round(t * 1e6);
  }
}
