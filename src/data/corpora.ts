/**
 * Loaders for the published folder layouts of the common acted / TV emotion corpora, and layout detection.
 * Each loader parses labels from file names or metadata files only (no audio is read), validates every clip,
 * and reports one line per clip that does not parse.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.ts';
import { parseCsvTable } from './csv.ts';
import { canonicalLabel } from './labels.ts';
import { AUDIO_EXTENSIONS, Reporter, dedupeById, isAudioFile, stem, walkFiles } from './scan.ts';
import type { CorpusKind, Dataset, DatasetItem, LoadOptions } from './types.ts';

const isDir = (p: string) => {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
};

function noClips(kind: string, dir: string, expected: string): UserError {
  return new UserError(`no ${kind} clips found (expected ${expected})`, dir);
}

// ---------------------------------------------------------------------------------------------------------------
// EmoDB (Burkhardt et al. 2005): SSTTTEv.wav = speaker, text code, emotion letter, version.

const EMODB_EMOTION: Record<string, string> = { W: 'anger', L: 'boredom', E: 'disgust', A: 'fear', F: 'happiness', T: 'sadness', N: 'neutral' };
const EMODB_SPEAKER_GENDER: Record<string, string> = {
  '03': 'male', '08': 'female', '09': 'female', '10': 'male', '11': 'male',
  '12': 'male', '13': 'female', '14': 'female', '15': 'male', '16': 'female',
};
/** The ten EmoDB sentences (as given in ../shared/data/emodb-dev/manifest.csv). */
export const EMODB_SENTENCES: Record<string, string> = {
  a01: 'Der Lappen liegt auf dem Eisschrank.',
  a02: 'Das will sie am Mittwoch abgeben.',
  a04: 'Heute abend könnte ich es ihm sagen.',
  a05: 'Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.',
  a07: 'In sieben Stunden wird es soweit sein.',
  b01: 'Was sind denn das für Tüten, die da unter dem Tisch stehen?',
  b02: 'Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.',
  b03: 'An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.',
  b09: 'Ich will das eben wegbringen und dann mit Karl was trinken gehen.',
  b10: 'Die wird auf dem Platz sein, wo wir sie immer hinlegen.',
};
const EMODB_RE = /^(\d{2})([ab]\d{2})([A-Z])([a-z])$/;
const EMODB_LOOSE = /^\d{2}[a-z]\d{2}[A-Z][a-z]$/;

export function loadEmoDB(dir: string, rep: Reporter): DatasetItem[] {
  const wavDir = isDir(path.join(dir, 'wav')) ? path.join(dir, 'wav') : dir;
  const files = walkFiles(wavDir, { maxDepth: 0, filter: isAudioFile });
  const items: DatasetItem[] = [];
  for (const f of files) {
    const id = stem(f);
    const m = EMODB_RE.exec(id);
    if (!m) {
      rep.invalid(f, 'not an EmoDB file name (expected SSTTTEv.wav, e.g. 03a01Fa.wav)');
      continue;
    }
    const [, spk, text, emo] = m as unknown as [string, string, string, string];
    const label = EMODB_EMOTION[emo];
    if (!label) {
      rep.invalid(f, `unknown EmoDB emotion code ${JSON.stringify(emo)} (W L E A F T N)`);
      continue;
    }
    const gender = EMODB_SPEAKER_GENDER[spk];
    if (!gender) {
      rep.invalid(f, `unknown EmoDB speaker ${spk} (03, 08-16)`);
      continue;
    }
    const transcript = EMODB_SENTENCES[text];
    if (!transcript) {
      rep.invalid(f, `unknown EmoDB sentence code ${text}`);
      continue;
    }
    items.push({ id, path: f, label, speaker: spk, gender, transcript });
  }
  if (items.length === 0 && rep.warnings.length === 0) throw noClips('EmoDB', wavDir, 'SSTTTEv.wav files, e.g. wav/03a01Fa.wav');
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// RAVDESS (Livingstone & Russo 2018): Actor_XX/MM-VV-EE-II-SS-RR-AA.wav.

const RAVDESS_EMOTION: Record<string, string> = {
  '01': 'neutral', '02': 'calm', '03': 'happiness', '04': 'sadness', '05': 'anger', '06': 'fear', '07': 'disgust', '08': 'surprise',
};
const RAVDESS_STATEMENT: Record<string, string> = { '01': 'Kids are talking by the door.', '02': 'Dogs are sitting by the door.' };
const RAVDESS_RE = /^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$/;

export function loadRAVDESS(dir: string, rep: Reporter): DatasetItem[] {
  const files = walkFiles(dir, { maxDepth: 3, filter: isAudioFile });
  const items: DatasetItem[] = [];
  for (const f of files) {
    const id = stem(f);
    const m = RAVDESS_RE.exec(id);
    if (!m) {
      rep.invalid(f, 'not a RAVDESS file name (expected MM-VV-EE-II-SS-RR-AA.wav, e.g. 03-01-05-01-02-01-12.wav)');
      continue;
    }
    const [, modality, channel, emo, intensity, statement, rep_, actor] = m as unknown as string[];
    const bad = (msg: string) => rep.invalid(f, `RAVDESS ${msg}`);
    if (modality !== '01' && modality !== '03') {
      bad(`modality ${modality} has no audio (01 audio-video, 03 audio-only)`);
      continue;
    }
    if (channel !== '01' && channel !== '02') {
      bad(`vocal channel ${channel} (01 speech, 02 song)`);
      continue;
    }
    const label = RAVDESS_EMOTION[emo!];
    if (!label) {
      bad(`emotion code ${emo} (01-08)`);
      continue;
    }
    if (intensity !== '01' && intensity !== '02') {
      bad(`intensity ${intensity} (01 normal, 02 strong)`);
      continue;
    }
    if (emo === '01' && intensity === '02') {
      bad('neutral has no strong intensity');
      continue;
    }
    const transcript = RAVDESS_STATEMENT[statement!];
    if (!transcript) {
      bad(`statement ${statement} (01, 02)`);
      continue;
    }
    if (rep_ !== '01' && rep_ !== '02') {
      bad(`repetition ${rep_} (01, 02)`);
      continue;
    }
    const a = Number(actor);
    if (!(a >= 1 && a <= 24)) {
      bad(`actor ${actor} (01-24)`);
      continue;
    }
    const folder = /^Actor_(\d{2})$/i.exec(path.basename(path.dirname(f)));
    if (folder && folder[1] !== actor) {
      bad(`actor ${actor} in folder ${path.basename(path.dirname(f))}`);
      continue;
    }
    items.push({ id, path: f, label, speaker: actor!, gender: a % 2 === 1 ? 'male' : 'female', transcript });
  }
  if (items.length === 0 && rep.warnings.length === 0) throw noClips('RAVDESS', dir, 'Actor_XX/03-01-EE-II-SS-RR-AA.wav');
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// CREMA-D (Cao et al. 2014): AudioWAV/AAAA_SSS_EEE_LL.wav = actor, sentence, emotion, level.

const CREMAD_EMOTION: Record<string, string> = { ANG: 'anger', DIS: 'disgust', FEA: 'fear', HAP: 'happiness', NEU: 'neutral', SAD: 'sadness' };
const CREMAD_SENTENCE: Record<string, string> = {
  IEO: "It's eleven o'clock.",
  TIE: 'That is exactly what happened.',
  IOM: "I'm on my way to the meeting.",
  IWW: 'I wonder what this is about.',
  TAI: 'The airplane is almost full.',
  MTI: 'Maybe tomorrow it will be cold.',
  IWL: 'I would like a new alarm clock.',
  ITH: "I think I have a doctor's appointment.",
  DFA: "Don't forget a jacket.",
  ITS: "I think I've seen this before.",
  TSI: 'The surface is slick.',
  WSI: "We'll stop in a couple of minutes.",
};
const CREMAD_RE = /^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$/;

/** Actor genders from CREMA-D's VideoDemographics.csv when it sits in (or above) the corpus folder. */
function cremadGenders(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const d of [dir, path.dirname(dir)]) {
    const f = path.join(d, 'VideoDemographics.csv');
    if (!fs.existsSync(f)) continue;
    const t = parseCsvTable(fs.readFileSync(f, 'utf8'), f);
    for (const r of t.records) {
      const id = r.values.ActorID?.trim();
      const sex = r.values.Sex?.trim().toLowerCase();
      if (id && sex) out.set(id, sex);
    }
    break;
  }
  return out;
}

export function loadCREMAD(dir: string, rep: Reporter): DatasetItem[] {
  const audioDir = isDir(path.join(dir, 'AudioWAV')) ? path.join(dir, 'AudioWAV') : dir;
  const files = walkFiles(audioDir, { maxDepth: 1, filter: isAudioFile });
  const genders = cremadGenders(dir);
  const items: DatasetItem[] = [];
  for (const f of files) {
    const id = stem(f);
    const m = CREMAD_RE.exec(id);
    if (!m) {
      rep.invalid(f, 'not a CREMA-D file name (expected AAAA_SSS_EEE_LL.wav, e.g. 1001_DFA_ANG_XX.wav)');
      continue;
    }
    const [, actor, sentence, emo, level] = m as unknown as string[];
    const a = Number(actor);
    if (!(a >= 1001 && a <= 1091)) {
      rep.invalid(f, `CREMA-D actor ${actor} (1001-1091)`);
      continue;
    }
    const transcript = CREMAD_SENTENCE[sentence!];
    if (!transcript) {
      rep.invalid(f, `unknown CREMA-D sentence code ${sentence}`);
      continue;
    }
    const label = CREMAD_EMOTION[emo!];
    if (!label) {
      rep.invalid(f, `unknown CREMA-D emotion ${emo} (ANG DIS FEA HAP NEU SAD)`);
      continue;
    }
    if (!['LO', 'MD', 'HI', 'XX', 'X'].includes(level!)) {
      rep.invalid(f, `unknown CREMA-D level ${level} (LO MD HI XX)`);
      continue;
    }
    const item: DatasetItem = { id, path: f, label, speaker: actor!, transcript };
    const g = genders.get(actor!);
    if (g) item.gender = g;
    items.push(item);
  }
  if (items.length === 0 && rep.warnings.length === 0) throw noClips('CREMA-D', audioDir, 'AudioWAV/1001_DFA_ANG_XX.wav');
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// TESS (Toronto emotional speech set): <OAF|YAF>_<emotion>/<OAF|YAF>_<word>_<emotion>.wav.

const TESS_EMOTIONS = new Set(['angry', 'disgust', 'fear', 'happy', 'neutral', 'ps', 'sad', 'pleasant_surprise', 'pleasant_surprised']);
const TESS_RE = /^(OAF|YAF)_([A-Za-z]+)_([A-Za-z_]+)$/i;

export function loadTESS(dir: string, rep: Reporter): DatasetItem[] {
  const files = walkFiles(dir, { maxDepth: 3, filter: isAudioFile });
  const items: DatasetItem[] = [];
  for (const f of files) {
    const id = stem(f);
    const m = TESS_RE.exec(id);
    if (!m) {
      rep.invalid(f, 'not a TESS file name (expected OAF_word_emotion.wav or YAF_word_emotion.wav)');
      continue;
    }
    const speaker = m[1]!.toUpperCase();
    const word = m[2]!.toLowerCase();
    const emoRaw = m[3]!.toLowerCase();
    if (!TESS_EMOTIONS.has(emoRaw)) {
      rep.invalid(f, `unknown TESS emotion ${JSON.stringify(emoRaw)} (angry disgust fear happy neutral ps sad)`);
      continue;
    }
    const label = canonicalLabel(emoRaw);
    // The folder (e.g. OAF_Pleasant_surprise) must agree with the file name.
    const folder = /^(OAF|YAF)_(.+)$/i.exec(path.basename(path.dirname(f)));
    if (folder && (folder[1]!.toUpperCase() !== speaker || canonicalLabel(folder[2]!) !== label)) {
      rep.invalid(f, `file name says ${speaker} ${label} but it is in folder ${path.basename(path.dirname(f))}`);
      continue;
    }
    items.push({ id, path: f, label, speaker, gender: 'female', transcript: `Say the word ${word}.` });
  }
  if (items.length === 0 && rep.warnings.length === 0) throw noClips('TESS', dir, 'OAF_angry/OAF_back_angry.wav');
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// IEMOCAP (Busso et al. 2008): IEMOCAP_full_release/SessionN/{sentences/wav/<dialog>/<utt>.wav,
// dialog/EmoEvaluation/<dialog>.txt, dialog/transcriptions/<dialog>.txt}.

const IEMOCAP_FOUR: Record<string, string> = { neu: 'neutral', hap: 'happiness', exc: 'happiness', ang: 'anger', sad: 'sadness' };
const IEMOCAP_CODES = new Set(['neu', 'hap', 'exc', 'ang', 'sad', 'fru', 'fea', 'sur', 'dis', 'oth', 'xxx']);
const IEMOCAP_LINE = /^\[(\d+(?:\.\d+)?) - (\d+(?:\.\d+)?)\]\t(\S+)\t(\S+)\t\[/;
const IEMOCAP_UTT = /^(Ses0[1-5])[FM]_.+_([FM])\w*$/;

export function iemocapRoot(dir: string): string | undefined {
  if (isDir(path.join(dir, 'IEMOCAP_full_release'))) return path.join(dir, 'IEMOCAP_full_release');
  for (let n = 1; n <= 5; n++) if (isDir(path.join(dir, `Session${n}`, 'dialog')) || isDir(path.join(dir, `Session${n}`, 'sentences'))) return dir;
  return undefined;
}

export function loadIEMOCAP(dir: string, rep: Reporter, classes: 'four' | 'all'): DatasetItem[] {
  const root = iemocapRoot(dir);
  if (!root) throw new UserError('not an IEMOCAP folder (expected IEMOCAP_full_release/Session1..5)', dir);
  const items: DatasetItem[] = [];
  const dropped = new Map<string, number>();
  let missingAudio = 0;
  let missingExample = '';
  let sessions = 0;
  for (let n = 1; n <= 5; n++) {
    const ses = path.join(root, `Session${n}`);
    const evalDir = path.join(ses, 'dialog', 'EmoEvaluation');
    if (!isDir(evalDir)) continue;
    sessions++;
    const transcripts = new Map<string, string>();
    const trDir = path.join(ses, 'dialog', 'transcriptions');
    if (isDir(trDir)) {
      for (const f of walkFiles(trDir, { maxDepth: 0, filter: (x) => x.endsWith('.txt') })) {
        for (const line of fs.readFileSync(f, 'utf8').split(/\r?\n/)) {
          const m = /^(\S+) \[[\d.]+-[\d.]+\]:\s?(.*)$/.exec(line);
          if (m) transcripts.set(m[1]!, m[2]!.trim());
        }
      }
    }
    for (const f of walkFiles(evalDir, { maxDepth: 0, filter: (x) => x.endsWith('.txt') })) {
      const lines = fs.readFileSync(f, 'utf8').split(/\r?\n/);
      lines.forEach((line, i) => {
        if (!line.startsWith('[')) return;
        const where = `${f}:${i + 1}`;
        const m = IEMOCAP_LINE.exec(line);
        if (!m) {
          rep.invalid(where, 'IEMOCAP evaluation line does not parse (expected "[start - end]\\tutt_id\\tlabel\\t[v, a, d]")');
          return;
        }
        const utt = m[3]!;
        const code = m[4]!.toLowerCase();
        const u = IEMOCAP_UTT.exec(utt);
        if (!u) {
          rep.invalid(where, `IEMOCAP utterance id ${JSON.stringify(utt)} does not parse (expected Ses0NX_<dialog>_<F|M>NNN)`);
          return;
        }
        if (!IEMOCAP_CODES.has(code)) {
          rep.invalid(where, `unknown IEMOCAP label ${JSON.stringify(code)}`);
          return;
        }
        const label = classes === 'four' ? IEMOCAP_FOUR[code] : code === 'xxx' ? undefined : canonicalLabel(code);
        if (!label) {
          dropped.set(code, (dropped.get(code) ?? 0) + 1);
          return;
        }
        const dialog = utt.slice(0, utt.lastIndexOf('_'));
        const wav = path.join(ses, 'sentences', 'wav', dialog, `${utt}.wav`);
        if (!fs.existsSync(wav)) {
          missingAudio++;
          missingExample ||= wav;
          return;
        }
        const session = u[1]!;
        const g = u[2]!;
        const item: DatasetItem = { id: utt, path: wav, label, speaker: `${session}${g}`, gender: g === 'F' ? 'female' : 'male', session };
        const t = transcripts.get(utt);
        if (t) item.transcript = t;
        items.push(item);
      });
    }
  }
  if (sessions === 0) throw new UserError('no IEMOCAP sessions with dialog/EmoEvaluation found', root);
  if (dropped.size) {
    const parts = [...dropped.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`);
    rep.note(`IEMOCAP: dropped ${[...dropped.values()].reduce((a, b) => a + b, 0)} utterances outside the ${classes === 'four' ? '4-class set (neu, hap+exc, ang, sad)' : 'labelled set'}: ${parts.join(', ')}`);
  }
  if (missingAudio) rep.warn(`IEMOCAP: ${missingAudio} labelled utterance(s) have no audio file (e.g. ${missingExample}); skipped`);
  if (items.length === 0) throw noClips('IEMOCAP', root, 'SessionN/sentences/wav/<dialog>/<utt>.wav with labels in SessionN/dialog/EmoEvaluation');
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// MELD (Poria et al. 2019): {train,dev,test}_sent_emo.csv + diaN_uttM audio in a folder per split.

const MELD_SPLITS = ['train', 'dev', 'test'] as const;
const MELD_AUDIO = /^dia(\d+)_utt(\d+)$/i;

export function meldCsvs(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const s of MELD_SPLITS) {
    for (const d of [dir, path.join(dir, 'MELD.Raw'), path.join(dir, 'data', 'MELD')]) {
      const f = path.join(d, `${s}_sent_emo.csv`);
      if (fs.existsSync(f)) {
        out.set(s, f);
        break;
      }
    }
  }
  return out;
}

export function loadMELD(dir: string, rep: Reporter): DatasetItem[] {
  const csvs = meldCsvs(dir);
  if (csvs.size === 0) throw new UserError('not a MELD folder (no train_sent_emo.csv / dev_sent_emo.csv / test_sent_emo.csv)', dir);
  // Index every diaN_uttM audio file under the corpus folder, grouped by split keyword in its folder path.
  const audio = walkFiles(dir, { maxDepth: 4, filter: (n) => isAudioFile(n) && MELD_AUDIO.test(stem(n)) });
  const items: DatasetItem[] = [];
  let splitsWithAudio = 0;
  for (const [split, csv] of csvs) {
    const files = new Map<string, string>();
    for (const f of audio) {
      const rel = path.relative(dir, path.dirname(f)).toLowerCase();
      if (!rel.split(/[\\/]/).some((part) => part.includes(split))) continue;
      const m = MELD_AUDIO.exec(stem(f))!;
      const key = `${Number(m[1])}_${Number(m[2])}`;
      const prev = files.get(key);
      const rank = (p: string) => AUDIO_EXTENSIONS.indexOf(path.extname(p).toLowerCase());
      if (!prev || rank(f) < rank(prev)) files.set(key, f);
    }
    const t = parseCsvTable(fs.readFileSync(csv, 'utf8'), csv);
    for (const c of ['Utterance', 'Speaker', 'Emotion', 'Dialogue_ID', 'Utterance_ID']) {
      if (!t.header.includes(c)) throw new UserError(`missing column "${c}" (columns: ${t.header.join(', ')})`, csv);
    }
    if (files.size === 0) {
      rep.warn(`MELD ${split}: no audio found for ${t.records.length} utterances of ${path.basename(csv)} (expected diaN_uttM.wav/.flac/.mp3/.mp4 files in a folder whose name contains "${split}"); split skipped`);
      continue;
    }
    splitsWithAudio++;
    let missing = 0;
    let missingExample = '';
    for (const r of t.records) {
      const v = r.values;
      const where = `${csv}:${r.line}`;
      const d = v.Dialogue_ID!.trim();
      const u = v.Utterance_ID!.trim();
      if (!/^\d+$/.test(d) || !/^\d+$/.test(u)) {
        rep.invalid(where, `MELD Dialogue_ID/Utterance_ID ${JSON.stringify(d)}/${JSON.stringify(u)} are not integers`);
        continue;
      }
      const emo = v.Emotion!.trim().toLowerCase();
      if (!['neutral', 'joy', 'sadness', 'anger', 'surprise', 'fear', 'disgust'].includes(emo)) {
        rep.invalid(where, `unknown MELD emotion ${JSON.stringify(v.Emotion)}`);
        continue;
      }
      const speaker = v.Speaker!.trim();
      if (!speaker) {
        rep.invalid(where, 'MELD row has no Speaker');
        continue;
      }
      const file = files.get(`${Number(d)}_${Number(u)}`);
      if (!file) {
        missing++;
        missingExample ||= `dia${d}_utt${u}`;
        continue;
      }
      items.push({ id: `${split}/dia${d}_utt${u}`, path: file, label: canonicalLabel(emo), speaker, transcript: v.Utterance!.trim(), split });
    }
    if (missing) rep.warn(`MELD ${split}: ${missing} of ${t.records.length} utterances have no audio file (e.g. ${missingExample}); skipped`);
  }
  if (splitsWithAudio === 0) {
    throw new UserError('MELD metadata found but no audio: expected diaN_uttM.wav (or .flac/.mp3/.mp4) files in folders named like train/, dev/, test/ beside the CSVs', dir);
  }
  if (items.length === 0) throw noClips('MELD', dir, 'diaN_uttM.wav files matching the CSV rows');
  return items;
}

// ---------------------------------------------------------------------------------------------------------------
// Layout detection.

const NAME_PATTERNS: Array<[CorpusKind, RegExp]> = [
  ['ravdess', RAVDESS_RE],
  ['cremad', CREMAD_RE],
  ['tess', TESS_RE],
  ['emodb', EMODB_LOOSE],
];

/** Which corpus layout a folder is in (throws a UserError when it cannot tell). */
export function detectCorpus(dir: string): CorpusKind {
  if (fs.existsSync(path.join(dir, 'manifest.csv')) || fs.existsSync(path.join(dir, 'manifest.jsonl'))) return 'manifest';
  if (meldCsvs(dir).size > 0) return 'meld';
  if (iemocapRoot(dir)) return 'iemocap';
  const files = walkFiles(dir, { maxDepth: 3, filter: isAudioFile, maxFiles: 2_000_000 });
  if (files.length === 0) throw new UserError('no audio files and no manifest.csv found', dir);
  const counts = new Map<CorpusKind, number>();
  for (const f of files) {
    const s = stem(f);
    for (const [kind, re] of NAME_PATTERNS) if (re.test(s)) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  }
  const best = [...counts.entries()].sort((a, b) => b[1] - a[1])[0];
  if (!best || best[1] < files.length / 2) {
    throw new UserError(
      `cannot tell the corpus layout: ${files.length} audio files, but no manifest.csv and most names match none of EmoDB, RAVDESS, CREMA-D, TESS (IEMOCAP and MELD are found by their metadata folders/CSVs); write a manifest.csv or pass the corpus kind`,
      dir,
    );
  }
  return best[0];
}

/** Load a corpus folder in a known layout (not manifests: see manifest.ts). */
export function loadCorpusFolder(dir: string, kind: Exclude<CorpusKind, 'manifest'>, opts: LoadOptions): Dataset {
  const rep = new Reporter(opts.onInvalid);
  let items: DatasetItem[];
  switch (kind) {
    case 'emodb':
      items = loadEmoDB(dir, rep);
      break;
    case 'ravdess':
      items = loadRAVDESS(dir, rep);
      break;
    case 'cremad':
      items = loadCREMAD(dir, rep);
      break;
    case 'tess':
      items = loadTESS(dir, rep);
      break;
    case 'iemocap':
      items = loadIEMOCAP(dir, rep, opts.iemocapClasses ?? 'four');
      break;
    case 'meld':
      items = loadMELD(dir, rep);
      break;
  }
  items = dedupeById(items, rep);
  if (items.length === 0) throw new UserError(`no valid ${kind} clips (${rep.warnings.length} skipped as invalid)`, dir);
  return { corpus: kind, root: dir, items, warnings: rep.warnings, notes: rep.notes };
}
