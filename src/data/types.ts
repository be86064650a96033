/** One labelled clip. Paths are absolute once loaded. */
export interface DatasetItem {
  /** Unique within the dataset (file stem for most corpora, `<split>/diaN_uttM` for MELD). */
  id: string;
  path: string;
  /** Canonical emotion label (see labels.ts), after any label map. */
  label: string;
  speaker: string;
  transcript?: string;
  /** Recording session (IEMOCAP `Ses01`...), for leave-one-session-out. */
  session?: string;
  gender?: string;
  durationS?: number;
  /** Official split when the corpus defines one (MELD train/dev/test; a manifest `split` column). */
  split?: string;
}

export type CorpusKind = 'manifest' | 'emodb' | 'ravdess' | 'cremad' | 'tess' | 'iemocap' | 'meld';

export const CORPUS_KINDS: readonly CorpusKind[] = ['manifest', 'emodb', 'ravdess', 'cremad', 'tess', 'iemocap', 'meld'];

export interface Dataset {
  corpus: CorpusKind;
  /** The folder or manifest file the dataset was loaded from (absolute). */
  root: string;
  items: DatasetItem[];
  /** Problems that were skipped (invalid clips with onInvalid 'skip', missing audio): one line each. */
  warnings: string[];
  /** Informational lines (labels dropped by design, label merges applied). */
  notes: string[];
}

export interface LoadOptions {
  /** Force a layout instead of auto-detecting it. */
  corpus?: CorpusKind;
  /** Rename / merge / drop labels, e.g. `{"excited": "happiness", "surprise": null}` or `"exc=hap,sur=-"`. */
  labelMap?: Record<string, string | null> | string;
  /** What to do with a clip whose name or metadata does not parse: throw (default) or skip with a warning. */
  onInvalid?: 'error' | 'skip';
  /** Manifests: check that every audio file exists (default true). */
  checkFiles?: boolean;
  /** IEMOCAP: the usual 4 classes (neutral, happiness = hap + exc, anger, sadness; default) or every label. */
  iemocapClasses?: 'four' | 'all';
}
