// What the overlay shows, computed from overlay events without touching the DOM (node tests it).
//
// Presentation rules (shared/papers.md §6, the machine-heuristic study: people over-trust machine
// labels): every value names the model that produced it and whether that model's weights were
// validated on human ratings; confidence dims the point; a value no model computes is shown as
// "not available", never as a made-up point; wording describes, it does not pronounce.

export const TRAIL_SECONDS = 5;
// A tick whose video frame the server did not analyse (video slower than 10 fps, or frames skipped
// because the server is busy) says face: present null; the overlay keeps showing the last analysed
// frame's face state for this long instead of flickering to "not available".
export const FACE_HOLD_SECONDS = 1;
// "server busy" stays up this long after the server last reported a skipped video frame.
export const BUSY_SECONDS = 3;

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
const isNum = (x) => typeof x === 'number' && Number.isFinite(x);

/** Circumplex position in [0, 1]²: x = valence (unpleasant → pleasant), y = arousal, down = calm. */
export function vaToXY(valence, arousal) {
  return { x: (clamp(valence, -1, 1) + 1) / 2, y: (1 - clamp(arousal, -1, 1)) / 2 };
}

/** Opacity of the current point: confidence 0 → 0.2, 1 → 1; unknown confidence → 0.35. */
export function confidenceOpacity(confidence) {
  if (!isNum(confidence)) return 0.35;
  return 0.2 + 0.8 * clamp(confidence, 0, 1);
}

/** Descriptive words for a V/A point, hedged ("leans"), "near neutral" inside ±0.15. */
export function describeVA(valence, arousal) {
  if (!isNum(valence) || !isNum(arousal)) return 'not available';
  const v = valence > 0.15 ? 'pleasant' : valence < -0.15 ? 'unpleasant' : null;
  const a = arousal > 0.15 ? 'excited' : arousal < -0.15 ? 'calm' : null;
  if (!v && !a) return 'near neutral';
  return `leans ${[v, a].filter(Boolean).join(', ')}`;
}

/** What the V/A model learned from, in words (`va_status` of the events; models/tagf.md). */
export function vaStatusText(status) {
  if (status === 'simulated-teacher') return 'learned from simulated cues, not human ratings';
  if (status === 'affwild2') return 'trained on Aff-Wild2 ratings';
  return typeof status === 'string' && status ? status : null;
}

export function formatNumber(x, digits = 2) {
  return isNum(x) ? (x >= 0 ? '+' : '−') + Math.abs(x).toFixed(digits) : '—';
}

export function formatPercent(p) {
  return isNum(p) ? `${Math.round(clamp(p, 0, 1) * 100)}%` : '—';
}

export function formatDb(db) {
  return isNum(db) ? `${db.toFixed(0)} dB` : '—';
}

export function formatMs(ms) {
  if (!isNum(ms)) return '—';
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/**
 * "BGM detected" with hysteresis in media time, so one noisy tick does not flip the label:
 * on after the music probability stays ≥ `on` for `holdS`, off after it stays < `off` for `holdS`.
 */
export class MusicState {
  constructor({ on = 0.6, off = 0.4, holdS = 1.0 } = {}) {
    Object.assign(this, { on, off, holdS });
    this.detected = false;
    this.since = null; // media time the probability first crossed toward the other state
  }

  update(t, probability) {
    if (!isNum(probability) || !isNum(t)) {
      this.since = null;
      return this.detected;
    }
    const crossing = this.detected ? probability < this.off : probability >= this.on;
    if (!crossing) {
      this.since = null;
    } else {
      if (this.since === null) this.since = t;
      if (t - this.since >= this.holdS - 1e-9) {
        this.detected = !this.detected;
        this.since = null;
      }
    }
    return this.detected;
  }
}

/**
 * Provenance lines for the fields shown: [{field, label, model, validated, card}].
 * `eventModels` maps event field → model id; `components` is welcome.models (component →
 * {id, card, validated}). validated: true | false | null (the server did not say).
 */
export function provenance(eventModels = {}, components = {}) {
  const byId = new Map();
  for (const [name, c] of Object.entries(components ?? {})) {
    if (c && typeof c === 'object' && c.id) byId.set(c.id, { component: name, ...c });
  }
  const labels = [
    ['valence', 'valence'], ['arousal', 'arousal'], ['music', 'music'], ['speech', 'speech'], ['face', 'face'],
  ];
  const seen = new Map();
  for (const [field, label] of labels) {
    const id = eventModels?.[field];
    if (!id) continue;
    const c = byId.get(id);
    const key = id;
    if (seen.has(key)) { seen.get(key).label += ` + ${label}`; continue; }
    seen.set(key, {
      field,
      label,
      model: id,
      validated: typeof c?.validated === 'boolean' ? c.validated : null,
      card: c?.card ?? null,
    });
  }
  for (const [field, id] of Object.entries(eventModels ?? {})) {
    if (!id || seen.has(id) || labels.some(([f]) => f === field)) continue;
    const c = byId.get(id);
    seen.set(id, { field, label: field, model: id, validated: typeof c?.validated === 'boolean' ? c.validated : null, card: c?.card ?? null });
  }
  return [...seen.values()];
}

export function validatedText(validated) {
  if (validated === true) return 'validated on human ratings';
  if (validated === false) return 'not validated on human ratings';
  return 'validation unknown';
}

/** State behind the overlay: the last event, the V/A trail, BGM hysteresis, models, connection. */
export class OverlayModel {
  constructor({ trailSeconds = TRAIL_SECONDS } = {}) {
    this.trailSeconds = trailSeconds;
    this.trail = []; // [{t, valence, arousal, confidence}]
    this.music = new MusicState();
    this.last = null;
    this.events = 0;
    this.components = {};
    this.connection = { state: 'idle', detail: {} };
    this.client = {};
    this.face = { present: null, t: null }; // the last analysed frame's face state
    this.skipped = { count: 0, t: null }; // the server's dropped.video_frames, and when it last grew
  }

  setComponents(models) {
    this.components = models ?? {};
  }

  setConnection(state, detail = {}) {
    this.connection = { state, detail };
  }

  update(event, client = {}) {
    const previousT = this.last?.t;
    this.last = event;
    this.client = client;
    this.events += 1;
    const t = event.t;
    if (isNum(t) && isNum(previousT) && t < previousT) { // media time went back: a new session
      this.trail = [];
      this.face = { present: null, t: null };
      this.skipped = { count: 0, t: null };
    }
    if (isNum(t) && isNum(event.valence) && isNum(event.arousal)) {
      this.trail.push({ t, valence: event.valence, arousal: event.arousal, confidence: event.confidence });
    }
    if (isNum(t)) this.trail = this.trail.filter((p) => t - p.t <= this.trailSeconds);
    this.music.update(t, event.music?.probability);
    const present = event.face?.present;
    if (typeof present === 'boolean') this.face = { present, t };
    const skipped = event.dropped?.video_frames;
    if (isNum(skipped)) {
      if (skipped > this.skipped.count) this.skipped.t = t;
      this.skipped.count = skipped;
    }
  }

  faceText(now) {
    const held = typeof this.face.present === 'boolean' && isNum(now) && isNum(this.face.t)
      && now - this.face.t <= FACE_HOLD_SECONDS;
    if (!held) return 'face: not available';
    return this.face.present ? 'face in view' : 'no face';
  }

  view() {
    const e = this.last ?? {};
    const vaAvailable = isNum(e.valence) && isNum(e.arousal);
    const now = e.t;
    const trail = this.trail.slice(0, -1).map((p) => ({
      ...vaToXY(p.valence, p.arousal),
      opacity: isNum(now) ? 0.6 * (1 - (now - p.t) / this.trailSeconds) * confidenceOpacity(p.confidence) : 0.2,
    })).filter((p) => p.opacity > 0.01);
    const musicP = e.music?.probability;
    return {
      t: isNum(e.t) ? e.t : null,
      events: this.events,
      va: {
        available: vaAvailable,
        ...(vaAvailable ? vaToXY(e.valence, e.arousal) : {}),
        opacity: confidenceOpacity(e.confidence),
        valence: formatNumber(e.valence),
        arousal: formatNumber(e.arousal),
        confidence: isNum(e.confidence) ? formatPercent(e.confidence) : '—',
        words: vaAvailable
          ? [describeVA(e.valence, e.arousal), vaStatusText(e.va_status)].filter(Boolean).join(' · ')
          : 'not available: no model yet',
      },
      trail: vaAvailable ? trail : [],
      music: {
        available: isNum(musicP),
        probability: isNum(musicP) ? clamp(musicP, 0, 1) : 0,
        probabilityText: formatPercent(musicP),
        level: formatDb(e.music?.level_db),
        bgm: this.music.detected,
        stateText: !isNum(musicP) ? 'music: not available' : this.music.detected ? 'BGM detected' : 'no BGM detected',
      },
      speech: {
        available: isNum(e.speech?.probability),
        probability: isNum(e.speech?.probability) ? clamp(e.speech.probability, 0, 1) : 0,
        text: formatPercent(e.speech?.probability),
        active: isNum(e.speech?.probability) && e.speech.probability >= 0.5,
      },
      face: this.faceText(now),
      latency: {
        server: formatMs(e.latency_ms),
        endToEnd: formatMs(this.client.e2eMs),
        // the server analyses fewer video frames while it is behind (docs/protocol.md, dropped)
        busy: isNum(now) && isNum(this.skipped.t) && now - this.skipped.t <= BUSY_SECONDS,
      },
      provenance: provenance(e.models, this.components).map((p) => ({ ...p, validatedText: validatedText(p.validated) })),
      connection: this.connection,
    };
  }
}
