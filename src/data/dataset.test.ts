/**
 * Corpus layouts: small fake trees in the published layouts (real short WAVs, real metadata formats) and the
 * real EmoDB dev clips. Checks parsing, validation messages, label maps and auto-detection.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadDataset } from './dataset.ts';
import { canonicalLabel, parseLabelMap } from './labels.ts';
import { UserError } from '../util/errors.ts';
import { emodbDev, tempDir } from '../../test/fixtures-gen/paths.ts';
import { writeText, writeTone } from '../../test/fixtures-gen/audio.ts';
import { sox } from '../../test/fixtures-gen/tools.ts';

const root = tempDir('layouts');
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => {
  const d = path.join(root, `${name}-${n++}`);
  fs.mkdirSync(d, { recursive: true });
  return d;
};

/** The rejection must be a one-line UserError that names `file` and matches `re`. */
async function expectUserError(p: Promise<unknown>, file: string, re: RegExp): Promise<void> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg).not.toContain('\n');
  expect(msg).toContain(file);
  expect(msg).toMatch(re);
}

const byId = <T extends { id: string }>(xs: T[]) => Object.fromEntries(xs.map((x) => [x.id, x]));

describe('manifests', () => {
  it('the real emodb-dev manifest: 373 clips with durations, transcripts with commas', async () => {
    const emo = emodbDev();
    const ds = await loadDataset(emo.dir);
    expect(ds.corpus).toBe('manifest');
    expect(ds.items.length).toBe(373);
    const it = ds.items.find((i) => i.path.endsWith('03b10Wb.wav'))!;
    expect(it).toMatchObject({ label: 'anger', speaker: '03', gender: 'male', transcript: 'Die wird auf dem Platz sein, wo wir sie immer hinlegen.' });
    expect(it.durationS).toBeGreaterThan(1);
    expect(path.isAbsolute(it.path) && fs.existsSync(it.path)).toBe(true);
  });

  it('CSV and JSONL manifests, relative and absolute paths, optional columns', async () => {
    const d = fresh('manifest');
    writeTone(path.join(d, 'a', 'x.wav'));
    const abs = writeTone(path.join(d, 'y.wav'));
    writeText(path.join(d, 'm.csv'), `path,label,speaker,transcript,session,duration_s,extra\na/x.wav,Angry,s1,"Hello, ""you""",S1,0.25,zzz\n${abs},exc,s2,,,,\n`);
    const csv = await loadDataset(path.join(d, 'm.csv'));
    expect(csv.items).toEqual([
      { id: 'a/x', path: path.join(d, 'a', 'x.wav'), label: 'anger', speaker: 's1', transcript: 'Hello, "you"', session: 'S1', durationS: 0.25 },
      { id: abs.replace(/\.wav$/, ''), path: abs, label: 'excited', speaker: 's2' },
    ]);
    writeText(path.join(d, 'm.jsonl'), `{"path":"a/x.wav","emotion":"sad","speaker":"s1","id":"clip1","duration_s":0.25}\n\n{"path":"y.wav","label":"neu","speaker":"s2","split":"test"}\n`);
    const jl = await loadDataset(path.join(d, 'm.jsonl'));
    expect(jl.items.map((i) => [i.id, i.label, i.split])).toEqual([['clip1', 'sadness', undefined], ['y', 'neutral', 'test']]);
  });

  it('reports bad rows with file and line', async () => {
    const d = fresh('badmanifest');
    writeTone(path.join(d, 'x.wav'));
    const m = (name: string, text: string) => writeText(path.join(d, name), text);
    await expectUserError(loadDataset(m('a.csv', 'path,speaker\nx.wav,s1\n')), 'a.csv', /missing column "emotion" or "label"/);
    await expectUserError(loadDataset(m('b.csv', 'path,emotion,speaker\nx.wav,anger,s1\nmissing.wav,anger,s1\n')), 'b.csv:3', /audio file missing.wav not found/);
    await expectUserError(loadDataset(m('c.csv', 'path,emotion,speaker,duration_s\nx.wav,anger,s1,abc\n')), 'c.csv:2', /duration_s "abc"/);
    await expectUserError(loadDataset(m('d.csv', 'path,emotion,speaker\nx.wav,anger,s1\nx.wav,sad,s1\n')), 'd.csv:3', /duplicate clip id/);
    await expectUserError(loadDataset(m('e.csv', 'path,emotion,speaker\nx.wav,anger\n')), 'e.csv', /line 2: 2 fields, header has 3/);
    await expectUserError(loadDataset(m('f.jsonl', '{"path":"x.wav","emotion":"anger","speaker":"s1"}\n{oops\n')), 'f.jsonl', /line 2: invalid JSON/);
    await expectUserError(loadDataset(m('g.csv', 'path,emotion,speaker\n')), 'g.csv', /lists no clips/);
    await expectUserError(loadDataset(m('h.csv', 'path,emotion,speaker\n"x.wav,anger,s1\n')), 'h.csv', /unterminated quoted field/);
    // Skipping instead of stopping.
    const ok = await loadDataset(m('i.csv', 'path,emotion,speaker\nx.wav,anger,s1\nmissing.wav,anger,s1\n'), { onInvalid: 'skip' });
    expect(ok.items.length).toBe(1);
    expect(ok.warnings).toEqual([expect.stringMatching(/i\.csv:3: audio file missing\.wav not found; skipped/)]);
  });
});

describe('EmoDB layout', () => {
  it('the real wav/ folder, no manifest: same labels, speakers and transcripts as manifest.csv', async () => {
    const emo = emodbDev();
    const fromNames = await loadDataset(emo.wavDir);
    const fromManifest = await loadDataset(emo.manifest);
    expect(fromNames.corpus).toBe('emodb');
    expect(fromNames.items.length).toBe(373);
    const m = Object.fromEntries(fromManifest.items.map((i) => [path.basename(i.path), i]));
    for (const it of fromNames.items) {
      const ref = m[path.basename(it.path)]!;
      expect([it.label, it.speaker, it.gender, it.transcript]).toEqual([ref.label, ref.speaker, ref.gender, ref.transcript]);
    }
  });

  it('flat folder or wav/ subfolder; bad names reported', async () => {
    const d = fresh('emodb');
    for (const f of ['03a01Fa', '08b10Wb', '16a07Ld']) writeTone(path.join(d, 'wav', `${f}.wav`));
    const ds = await loadDataset(d);
    expect(ds.corpus).toBe('emodb');
    expect(byId(ds.items)['08b10Wb']).toMatchObject({ label: 'anger', speaker: '08', gender: 'female', transcript: 'Die wird auf dem Platz sein, wo wir sie immer hinlegen.' });
    expect(byId(ds.items)['16a07Ld']).toMatchObject({ label: 'boredom', speaker: '16', transcript: 'In sieben Stunden wird es soweit sein.' });
    writeTone(path.join(d, 'wav', '03a01Xa.wav'));
    await expectUserError(loadDataset(d), '03a01Xa.wav', /unknown EmoDB emotion code "X"/);
    writeTone(path.join(d, 'wav', '03a01Xa.wav'));
    fs.rmSync(path.join(d, 'wav', '03a01Xa.wav'));
    writeTone(path.join(d, 'wav', '03c99Fa.wav'));
    await expectUserError(loadDataset(d, { corpus: 'emodb' }), '03c99Fa.wav', /not an EmoDB file name/);
    const skipped = await loadDataset(d, { corpus: 'emodb', onInvalid: 'skip' });
    expect(skipped.items.length).toBe(3);
    expect(skipped.warnings.length).toBe(1);
  });

  it('an empty corpus folder is an error', async () => {
    const d = fresh('emodb-empty');
    fs.mkdirSync(path.join(d, 'wav'));
    await expectUserError(loadDataset(d, { corpus: 'emodb' }), d, /no EmoDB clips found/);
    await expectUserError(loadDataset(d), d, /no audio files and no manifest\.csv/);
  });
});

describe('RAVDESS layout', () => {
  it('parses Actor_XX/MM-VV-EE-II-SS-RR-AA.wav', async () => {
    const d = fresh('ravdess');
    writeTone(path.join(d, 'Actor_01', '03-01-05-01-01-01-01.wav'));
    writeTone(path.join(d, 'Actor_02', '03-01-01-01-02-02-02.wav'));
    writeTone(path.join(d, 'Actor_02', '03-02-08-02-02-01-02.wav'));
    writeTone(path.join(d, 'Actor_24', '03-01-02-02-01-01-24.wav'));
    const ds = await loadDataset(d);
    expect(ds.corpus).toBe('ravdess');
    const m = byId(ds.items);
    expect(m['03-01-05-01-01-01-01']).toMatchObject({ label: 'anger', speaker: '01', gender: 'male', transcript: 'Kids are talking by the door.' });
    expect(m['03-01-01-01-02-02-02']).toMatchObject({ label: 'neutral', speaker: '02', gender: 'female', transcript: 'Dogs are sitting by the door.' });
    expect(m['03-02-08-02-02-01-02']!.label).toBe('surprise');
    expect(m['03-01-02-02-01-01-24']).toMatchObject({ label: 'calm', speaker: '24' });
  });

  it('rejects impossible codes and actor/folder mismatches', async () => {
    const cases: Array<[string, RegExp]> = [
      ['Actor_01/03-01-01-02-01-01-01.wav', /neutral has no strong intensity/],
      ['Actor_01/03-01-09-01-01-01-01.wav', /emotion code 09/],
      ['Actor_01/02-01-03-01-01-01-01.wav', /modality 02 has no audio/],
      ['Actor_03/03-01-03-01-01-01-01.wav', /actor 01 in folder Actor_03/],
      ['Actor_01/03-01-03-01-03-01-01.wav', /statement 03/],
    ];
    for (const [rel, re] of cases) {
      const d = fresh('ravdess-bad');
      writeTone(path.join(d, 'Actor_01', '03-01-05-01-01-01-01.wav'));
      writeTone(path.join(d, rel));
      await expectUserError(loadDataset(d), path.basename(rel), re);
    }
  });
});

describe('CREMA-D layout', () => {
  it('parses AudioWAV/AAAA_SSS_EEE_LL.wav with genders from VideoDemographics.csv', async () => {
    const d = fresh('cremad');
    writeTone(path.join(d, 'AudioWAV', '1001_DFA_ANG_XX.wav'));
    writeTone(path.join(d, 'AudioWAV', '1002_IEO_HAP_HI.wav'));
    writeTone(path.join(d, 'AudioWAV', '1091_WSI_NEU_XX.wav'));
    // The MP3 copies of the same clips must not double the count.
    writeText(path.join(d, 'AudioMP3', '1001_DFA_ANG_XX.mp3'), 'not read');
    writeText(path.join(d, 'VideoDemographics.csv'), 'ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n');
    const ds = await loadDataset(d);
    expect(ds.corpus).toBe('cremad');
    expect(ds.items.length).toBe(3);
    const m = byId(ds.items);
    expect(m['1001_DFA_ANG_XX']).toMatchObject({ label: 'anger', speaker: '1001', gender: 'male', transcript: "Don't forget a jacket." });
    expect(m['1002_IEO_HAP_HI']).toMatchObject({ label: 'happiness', speaker: '1002', gender: 'female', transcript: "It's eleven o'clock." });
    expect(m['1091_WSI_NEU_XX']!.gender).toBeUndefined();
    writeTone(path.join(d, 'AudioWAV', '1003_XYZ_SAD_LO.wav'));
    await expectUserError(loadDataset(d), '1003_XYZ_SAD_LO.wav', /unknown CREMA-D sentence code XYZ/);
  });
});

describe('TESS layout', () => {
  it('parses speaker-emotion folders and checks the folder agrees with the name', async () => {
    const d = fresh('tess');
    writeTone(path.join(d, 'TESS Toronto emotional speech set data', 'OAF_angry', 'OAF_back_angry.wav'));
    writeTone(path.join(d, 'TESS Toronto emotional speech set data', 'YAF_pleasant_surprised', 'YAF_bar_ps.wav'));
    writeTone(path.join(d, 'TESS Toronto emotional speech set data', 'OAF_Sad', 'OAF_base_sad.wav'));
    writeTone(path.join(d, 'TESS Toronto emotional speech set data', 'OAF_Pleasant_surprise', 'OAF_bite_ps.wav'));
    const ds = await loadDataset(d);
    expect(ds.corpus).toBe('tess');
    const m = byId(ds.items);
    expect(m.OAF_back_angry).toMatchObject({ label: 'anger', speaker: 'OAF', gender: 'female', transcript: 'Say the word back.' });
    expect(m.YAF_bar_ps).toMatchObject({ label: 'surprise', speaker: 'YAF' });
    expect(m.OAF_base_sad!.label).toBe('sadness');
    expect(m.OAF_bite_ps!.label).toBe('surprise');
    writeTone(path.join(d, 'TESS Toronto emotional speech set data', 'OAF_angry', 'OAF_dog_sad.wav'));
    await expectUserError(loadDataset(d), 'OAF_dog_sad.wav', /says OAF sadness but it is in folder OAF_angry/);
  });
});

describe('IEMOCAP layout', () => {
  const evalFile = (lines: Array<[string, string]>) =>
    '% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n' +
    lines.map(([utt, lab], i) => `[${(i * 3 + 1).toFixed(4)} - ${(i * 3 + 2.5).toFixed(4)}]\t${utt}\t${lab}\t[2.5000, 2.5000, 2.5000]\nC-E2:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n`).join('');
  const build = () => {
    const d = fresh('iemocap');
    const r = path.join(d, 'IEMOCAP_full_release');
    const s1 = path.join(r, 'Session1');
    const dlg = 'Ses01F_impro01';
    for (const u of ['F000', 'M000', 'F001', 'M001', 'F002']) writeTone(path.join(s1, 'sentences', 'wav', dlg, `${dlg}_${u}.wav`));
    writeText(path.join(s1, 'dialog', 'EmoEvaluation', `${dlg}.txt`), evalFile([[`${dlg}_F000`, 'neu'], [`${dlg}_M000`, 'exc'], [`${dlg}_F001`, 'fru'], [`${dlg}_M001`, 'ang'], [`${dlg}_F002`, 'xxx'], [`${dlg}_M003`, 'sad']]));
    writeText(path.join(s1, 'dialog', 'EmoEvaluation', 'Categorical', `${dlg}_e1_cat.txt`), 'not read\n');
    writeText(path.join(s1, 'dialog', 'transcriptions', `${dlg}.txt`), `${dlg}_F000 [006.2901-008.2357]: Excuse me.\n${dlg}_M000 [007.5712-010.4750]: Do you have your forms?\nM: [LAUGHTER]\n`);
    const s2 = path.join(r, 'Session2');
    const dlg2 = 'Ses02M_script01_1';
    writeTone(path.join(s2, 'sentences', 'wav', dlg2, `${dlg2}_F003.wav`));
    writeText(path.join(s2, 'dialog', 'EmoEvaluation', `${dlg2}.txt`), evalFile([[`${dlg2}_F003`, 'sad']]));
    return d;
  };

  it('4-class set (hap+exc merged), speakers = session + gender, transcripts, missing audio reported', async () => {
    const d = build();
    const ds = await loadDataset(d);
    expect(ds.corpus).toBe('iemocap');
    expect(ds.items.map((i) => [i.id, i.label, i.speaker, i.session, i.gender, i.transcript])).toEqual([
      ['Ses01F_impro01_F000', 'neutral', 'Ses01F', 'Ses01', 'female', 'Excuse me.'],
      ['Ses01F_impro01_M000', 'happiness', 'Ses01M', 'Ses01', 'male', 'Do you have your forms?'],
      ['Ses01F_impro01_M001', 'anger', 'Ses01M', 'Ses01', 'male', undefined],
      ['Ses02M_script01_1_F003', 'sadness', 'Ses02F', 'Ses02', 'female', undefined],
    ]);
    expect(ds.notes.join(' ')).toMatch(/dropped 2 utterances outside the 4-class set.*fru 1.*xxx 1/);
    expect(ds.warnings).toEqual([expect.stringMatching(/1 labelled utterance\(s\) have no audio file \(e\.g\. .*Ses01F_impro01_M003\.wav\)/)]);
    // The folder itself works too, and all classes on request.
    const all = await loadDataset(path.join(d, 'IEMOCAP_full_release'), { iemocapClasses: 'all' });
    expect(all.items.map((i) => i.label).sort()).toEqual(['anger', 'excited', 'frustration', 'neutral', 'sadness']);
  });

  it('a malformed evaluation line is reported with file:line', async () => {
    const d = build();
    const f = path.join(d, 'IEMOCAP_full_release', 'Session2', 'dialog', 'EmoEvaluation', 'Ses02M_script01_1.txt');
    fs.appendFileSync(f, '[1.0 - 2.0]\tSes02M_script01_1_F004 neu\n');
    await expectUserError(loadDataset(d), `Ses02M_script01_1.txt:7`, /evaluation line does not parse/);
  });
});

describe('MELD layout', () => {
  const header = 'Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n';
  it('CSV rows joined with diaN_uttM audio per split; missing audio and missing splits reported', async () => {
    const d = fresh('meld');
    writeText(
      path.join(d, 'train_sent_emo.csv'),
      header +
        '1,"also I was the point person on my company\'s transition from the KL-5 to GR-6 system.",Chandler,neutral,neutral,0,0,8,21,"00:16:16,059","00:16:21,731"\n' +
        '2,"You must\'ve had your hands full.",The Interviewer,joy,positive,0,1,8,21,"00:16:21,940","00:16:23,442"\n' +
        '3,"That I did. That I did.",Chandler,surprise,neutral,0,2,8,21,"00:16:23,442","00:16:26,389"\n',
    );
    writeTone(path.join(d, 'train_splits', 'dia0_utt0.wav'));
    writeTone(path.join(d, 'train_splits', 'dia0_utt1.wav'));
    writeText(path.join(d, 'dev_sent_emo.csv'), header + '1,"Oh my God!",Rachel,fear,negative,3,0,1,1,"00:00:01,000","00:00:02,000"\n');
    const wav = writeTone(path.join(d, 'tmp.wav'));
    fs.mkdirSync(path.join(d, 'dev_splits_complete'));
    sox(wav, path.join(d, 'dev_splits_complete', 'dia3_utt0.flac'));
    fs.rmSync(wav);
    writeText(path.join(d, 'test_sent_emo.csv'), header + '1,"Hi.",Ross,anger,negative,0,0,1,1,"00:00:01,000","00:00:02,000"\n');
    const ds = await loadDataset(d);
    expect(ds.corpus).toBe('meld');
    expect(ds.items.map((i) => [i.id, i.label, i.speaker, i.split, path.relative(d, i.path)])).toEqual([
      ['dev/dia3_utt0', 'fear', 'Rachel', 'dev', path.join('dev_splits_complete', 'dia3_utt0.flac')],
      ['train/dia0_utt0', 'neutral', 'Chandler', 'train', path.join('train_splits', 'dia0_utt0.wav')],
      ['train/dia0_utt1', 'happiness', 'The Interviewer', 'train', path.join('train_splits', 'dia0_utt1.wav')],
    ]);
    expect(ds.items[1]!.transcript).toBe("also I was the point person on my company's transition from the KL-5 to GR-6 system.");
    expect(ds.warnings).toEqual([
      expect.stringMatching(/MELD train: 1 of 3 utterances have no audio file \(e\.g\. dia0_utt2\)/),
      expect.stringMatching(/MELD test: no audio found for 1 utterances of test_sent_emo\.csv/),
    ]);
  });

  it('metadata without any audio is an error', async () => {
    const d = fresh('meld-noaudio');
    writeText(path.join(d, 'train_sent_emo.csv'), header + '1,"Hi.",Ross,anger,negative,0,0,1,1,"00:00:01,000","00:00:02,000"\n');
    await expectUserError(loadDataset(d), d, /MELD metadata found but no audio/);
  });
});

describe('label maps', () => {
  it('parses the string and object forms through the alias table', () => {
    expect(parseLabelMap('exc=hap,sur=-')).toEqual({ excited: 'happiness', surprise: null });
    expect(parseLabelMap({ excited: 'happiness', surprised: null })).toEqual({ excited: 'happiness', surprise: null });
    expect(parseLabelMap('{"fru": "ang"}')).toEqual({ frustration: 'anger' });
    expect(() => parseLabelMap('exc')).toThrow(/is not from=to/);
    expect(canonicalLabel('Pleasant_Surprise')).toBe('surprise');
    expect(canonicalLabel('joy')).toBe('happiness');
    expect(canonicalLabel('Whatever')).toBe('whatever');
  });

  it('renames, merges and drops when loading', async () => {
    const d = fresh('labelmap');
    writeTone(path.join(d, 'x.wav'));
    writeText(path.join(d, 'manifest.csv'), 'path,emotion,speaker,id\nx.wav,excited,s1,a\nx.wav,happy,s1,b\nx.wav,surprised,s2,c\nx.wav,anger,s2,d\n');
    const ds = await loadDataset(d, { labelMap: 'exc=hap,sur=-' });
    expect(ds.items.map((i) => [i.id, i.label])).toEqual([['a', 'happiness'], ['b', 'happiness'], ['d', 'anger']]);
    expect(ds.notes.at(-1)).toMatch(/1 relabelled, 1 dropped/);
    await expectUserError(loadDataset(d, { labelMap: 'exc=-,hap=-,sur=-,ang=-' }), d, /drops every clip/);
  });
});

describe('detection', () => {
  it('refuses folders it cannot place, naming them', async () => {
    const d = fresh('unknown');
    writeTone(path.join(d, 'hello.wav'));
    writeTone(path.join(d, 'world.wav'));
    await expectUserError(loadDataset(d), d, /cannot tell the corpus layout/);
    await expectUserError(loadDataset(path.join(d, 'nope')), 'nope', /no such file or folder/);
    await expectUserError(loadDataset(path.join(d, 'hello.wav')), 'hello.wav', /expected a folder or a \.csv/);
  });
});
