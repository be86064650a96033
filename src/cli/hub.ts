import { type HubFileSelection, type HubOptions, resolveModelPath, resolveTrainedModel } from '../io/hub.ts';
import { downloadProgress } from './progress.ts';

async function withProgress(f: (o: Omit<HubOptions, 'files'>) => Promise<string>): Promise<string> {
  const bar = downloadProgress();
  try {
    return await f({ onProgress: (p) => bar.update(p), log: (l) => console.error(l) });
  } finally {
    bar.stop();
  }
}

/** The local folder for a model argument: a Hub id (`org/name[@rev]`) is fetched into the Hugging Face cache first. */
export const modelFolder = (idOrPath: string, files: HubFileSelection) => withProgress((o) => resolveModelPath(idOrPath, { ...o, files }));

/** The local folder of a trained emosllm model (folder or Hub id), with the Hub encoder and LLM it names in the cache. */
export const trainedModelFolder = (idOrPath: string) => withProgress((o) => resolveTrainedModel(idOrPath, o));
