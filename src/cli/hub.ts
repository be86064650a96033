import { type HubFileSelection, resolveModelPath } from '../io/hub.ts';
import { downloadProgress } from './progress.ts';

/** The local folder for a model argument: a Hub id (`org/name[@rev]`) is fetched into the Hugging Face cache first. */
export async function modelFolder(idOrPath: string, files: HubFileSelection): Promise<string> {
  const bar = downloadProgress();
  try {
    return await resolveModelPath(idOrPath, { files, onProgress: (p) => bar.update(p), log: (l) => console.error(l) });
  } finally {
    bar.stop();
  }
}
