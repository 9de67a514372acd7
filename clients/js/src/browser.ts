// The script-tag bundle: the global `Wavecast` is the client class, with
// the rest of the package hung on it (`Wavecast.UnauthorizedError`, ...).
import * as all from "./index";
export default Object.assign(all.Wavecast, all);
