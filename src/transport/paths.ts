import { fileURLToPath } from 'node:url';

/**
 * The directory holding the `pyvisor` Python package. This file sits in `src/transport/` and in
 * `dist/transport/`, so the same relative path works from sources and from the build.
 */
export const PYTHON_DIR = fileURLToPath(new URL('../../python', import.meta.url));
