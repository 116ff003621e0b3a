import { fileURLToPath } from 'node:url';

/**
 * The directory holding the `pyvisor` Python package. This file sits at the root of `src/` and of
 * `dist/`, so the same relative path works from sources and from the build.
 */
export const PYTHON_DIR = fileURLToPath(new URL('../python', import.meta.url));
