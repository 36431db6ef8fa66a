/*
 * edgeseg's native core: the host-side work around inference, in C.
 *
 *   normalize(image, scale, shift, out, swap_rb)   uint8 HxWx3 -> float32/float16 1x3xHxW, fused
 *   argmax(logits, out)                            float32 NxCxHxW -> uint8/int32 NxHxW
 *   confusion(pred, label, matrix, ignore_index)   accumulate a CxC int64 confusion matrix
 *
 * Every function works on caller-owned buffers (no allocation on the hot path but
 * argmax's per-call best-value row) and releases the GIL while it loops, so a
 * decode thread, the runtime and post-processing can run at the same time.
 * edgeseg/runtime/native.py holds the numpy twin that gives identical results and is
 * used where this extension was not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* IEEE float32 -> float16 bits, round to nearest even (what numpy's astype(float16) does). */
static uint16_t float_to_half(float value)
{
    uint32_t x;
    memcpy(&x, &value, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exponent = (x >> 23) & 0xffu;
    uint32_t mantissa = x & 0x7fffffu;
    if (exponent == 0xffu) { /* inf or nan */
        if (mantissa) {
            uint32_t payload = mantissa >> 13;
            return (uint16_t)(sign | 0x7c00u | (payload ? payload : 0x200u));
        }
        return (uint16_t)(sign | 0x7c00u);
    }
    int32_t e = (int32_t)exponent - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00u); /* overflow: infinity */
    if (e <= 0) {                          /* subnormal half, or zero */
        if (e < -10)
            return (uint16_t)sign;
        mantissa |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mantissa >> shift;
        uint32_t rest = mantissa & ((1u << shift) - 1u);
        uint32_t halfway = 1u << (shift - 1u);
        if (rest > halfway || (rest == halfway && (half & 1u)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (mantissa >> 13);
    uint32_t rest = mantissa & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        half++; /* a carry into the exponent is still the right rounding */
    return (uint16_t)half;
}

static int get_buffer(PyObject *object, Py_buffer *view, int writable, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) != 0) {
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous%s array", what, writable ? " writable" : "");
        return -1;
    }
    return 0;
}

static PyObject *native_normalize(PyObject *self, PyObject *args)
{
    PyObject *image_obj, *out_obj;
    float scale[3], shift[3];
    int swap_rb;
    if (!PyArg_ParseTuple(args, "O(fff)(fff)Op", &image_obj, &scale[0], &scale[1], &scale[2], &shift[0],
                          &shift[1], &shift[2], &out_obj, &swap_rb))
        return NULL;
    Py_buffer image, out;
    if (get_buffer(image_obj, &image, 0, "image") < 0)
        return NULL;
    if (get_buffer(out_obj, &out, 1, "out") < 0) {
        PyBuffer_Release(&image);
        return NULL;
    }
    PyObject *result = NULL;
    if (image.ndim != 3 || image.shape[2] != 3 || image.itemsize != 1) {
        PyErr_SetString(PyExc_ValueError, "image must be uint8 of shape (H, W, 3)");
        goto done;
    }
    Py_ssize_t pixels = image.shape[0] * image.shape[1];
    int half = out.itemsize == 2;
    if ((out.itemsize != 4 && !half) || out.len != pixels * 3 * out.itemsize) {
        PyErr_SetString(PyExc_ValueError, "out must be float32 or float16 holding 3*H*W values");
        goto done;
    }
    const uint8_t *src = (const uint8_t *)image.buf;
    Py_BEGIN_ALLOW_THREADS
    for (int c = 0; c < 3; c++) {
        int source_channel = swap_rb ? 2 - c : c;
        float a = scale[c], b = shift[c];
        if (half) {
            uint16_t *dst = (uint16_t *)out.buf + c * pixels;
            for (Py_ssize_t p = 0; p < pixels; p++) {
                float v = (float)src[p * 3 + source_channel] * a;
                dst[p] = float_to_half(v + b);
            }
        } else {
            float *dst = (float *)out.buf + c * pixels;
            for (Py_ssize_t p = 0; p < pixels; p++) {
                float v = (float)src[p * 3 + source_channel] * a;
                dst[p] = v + b;
            }
        }
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None); /* Py_NewRef needs 3.10; JetPack 5 ships 3.8 */
    result = Py_None;
done:
    PyBuffer_Release(&image);
    PyBuffer_Release(&out);
    return result;
}

#define ARGMAX_TILE 4096 /* pixels per tile: best values and indices stay in L1 while classes stream by */

/* Exact numpy semantics for one tile: the first maximum wins and the first NaN beats everything. */
static void argmax_tile_exact(const float *plane, Py_ssize_t classes, Py_ssize_t pixels, Py_ssize_t offset,
                              Py_ssize_t count, float *best, int32_t *index)
{
    for (Py_ssize_t p = 0; p < count; p++) {
        best[p] = plane[offset + p];
        index[p] = 0;
    }
    for (Py_ssize_t c = 1; c < classes; c++) {
        const float *row = plane + c * pixels + offset;
        for (Py_ssize_t p = 0; p < count; p++) {
            float v = row[p];
            if (v > best[p] || (v != v && best[p] == best[p])) {
                best[p] = v;
                index[p] = (int32_t)c;
            }
        }
    }
}

/* Fast path over one class row: a branchless compare-and-select the compiler vectorises.
 * NaN never wins a `>` comparison, so a row holding one is flagged for the exact loop. */
static int32_t argmax_row_fast(const float *restrict row, Py_ssize_t count, float *restrict best,
                               int32_t *restrict index, int32_t c)
{
    int32_t nan_seen = 0;
    for (Py_ssize_t p = 0; p < count; p++) {
        float v = row[p];
        float b = best[p];
        int32_t take = -(int32_t)(v > b); /* all ones where v wins */
        nan_seen |= -(int32_t)(v != v);
        best[p] = v > b ? v : b;
        index[p] = (index[p] & ~take) | (c & take);
    }
    return nan_seen;
}

/* Returns non-zero when a NaN was seen: the caller then redoes the tile with the exact loop. */
static int32_t argmax_tile_fast(const float *plane, Py_ssize_t classes, Py_ssize_t pixels, Py_ssize_t offset,
                                Py_ssize_t count, float *best, int32_t *index)
{
    const float *first = plane + offset;
    int32_t nan_seen = 0;
    for (Py_ssize_t p = 0; p < count; p++) {
        best[p] = first[p];
        index[p] = 0;
        nan_seen |= -(int32_t)(first[p] != first[p]);
    }
    for (Py_ssize_t c = 1; c < classes; c++)
        nan_seen |= argmax_row_fast(plane + c * pixels + offset, count, best, index, (int32_t)c);
    return nan_seen;
}

static PyObject *native_argmax(PyObject *self, PyObject *args)
{
    PyObject *logits_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &logits_obj, &out_obj))
        return NULL;
    Py_buffer logits, out;
    if (get_buffer(logits_obj, &logits, 0, "logits") < 0)
        return NULL;
    if (get_buffer(out_obj, &out, 1, "out") < 0) {
        PyBuffer_Release(&logits);
        return NULL;
    }
    PyObject *result = NULL;
    if (logits.ndim != 4 || logits.itemsize != 4 || strcmp(logits.format, "f") != 0) {
        PyErr_SetString(PyExc_ValueError, "logits must be float32 of shape (N, C, H, W)");
        goto done;
    }
    Py_ssize_t batch = logits.shape[0], classes = logits.shape[1], pixels = logits.shape[2] * logits.shape[3];
    if ((out.itemsize != 1 && out.itemsize != 4) || out.len != batch * pixels * out.itemsize) {
        PyErr_SetString(PyExc_ValueError, "out must be uint8 or int32 of shape (N, H, W)");
        goto done;
    }
    if (out.itemsize == 1 && classes > 256) {
        PyErr_SetString(PyExc_ValueError, "more than 256 classes need an int32 output");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    float best[ARGMAX_TILE];
    int32_t index[ARGMAX_TILE];
    for (Py_ssize_t n = 0; n < batch; n++) {
        const float *plane = (const float *)logits.buf + n * classes * pixels;
        for (Py_ssize_t offset = 0; offset < pixels; offset += ARGMAX_TILE) {
            Py_ssize_t count = pixels - offset < ARGMAX_TILE ? pixels - offset : ARGMAX_TILE;
            if (argmax_tile_fast(plane, classes, pixels, offset, count, best, index))
                argmax_tile_exact(plane, classes, pixels, offset, count, best, index);
            if (out.itemsize == 1) {
                uint8_t *dst = (uint8_t *)out.buf + n * pixels + offset;
                for (Py_ssize_t p = 0; p < count; p++)
                    dst[p] = (uint8_t)index[p];
            } else {
                memcpy((int32_t *)out.buf + n * pixels + offset, index, (size_t)count * sizeof(int32_t));
            }
        }
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None); /* Py_NewRef needs 3.10; JetPack 5 ships 3.8 */
    result = Py_None;
done:
    PyBuffer_Release(&logits);
    PyBuffer_Release(&out);
    return result;
}

static int64_t read_label(const Py_buffer *view, Py_ssize_t i)
{
    switch (view->itemsize) {
    case 1: return ((const uint8_t *)view->buf)[i];
    case 2: return ((const uint16_t *)view->buf)[i];
    case 4: return ((const int32_t *)view->buf)[i];
    default: return ((const int64_t *)view->buf)[i];
    }
}

static PyObject *native_confusion(PyObject *self, PyObject *args)
{
    PyObject *pred_obj, *label_obj, *matrix_obj;
    long long ignore_index;
    if (!PyArg_ParseTuple(args, "OOOL", &pred_obj, &label_obj, &matrix_obj, &ignore_index))
        return NULL;
    Py_buffer pred, label, matrix;
    if (get_buffer(pred_obj, &pred, 0, "pred") < 0)
        return NULL;
    if (get_buffer(label_obj, &label, 0, "label") < 0) {
        PyBuffer_Release(&pred);
        return NULL;
    }
    if (get_buffer(matrix_obj, &matrix, 1, "matrix") < 0) {
        PyBuffer_Release(&pred);
        PyBuffer_Release(&label);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t count = pred.len / pred.itemsize;
    if (count != label.len / label.itemsize) {
        PyErr_SetString(PyExc_ValueError, "pred and label must hold the same number of pixels");
        goto done;
    }
    if (matrix.ndim != 2 || matrix.shape[0] != matrix.shape[1] || matrix.itemsize != 8) {
        PyErr_SetString(PyExc_ValueError, "matrix must be int64 of shape (C, C)");
        goto done;
    }
    int64_t classes = matrix.shape[0];
    int64_t *cells = (int64_t *)matrix.buf;
    /* a prediction outside [0, classes) is a bug upstream, never a pixel to count: stop at the first
       one, take back what this call added, and raise (the numpy twin raises before adding anything) */
    Py_ssize_t bad_at = -1;
    int64_t bad_value = 0;
    Py_BEGIN_ALLOW_THREADS
    if (pred.itemsize == 1 && label.itemsize == 1) {
        /* the common case (argmax output vs PNG labels) without a per-pixel type switch */
        const uint8_t *guesses = (const uint8_t *)pred.buf, *truths = (const uint8_t *)label.buf;
        Py_ssize_t i;
        for (i = 0; i < count; i++) {
            int64_t truth = truths[i], guess = guesses[i];
            if (guess >= classes) {
                bad_at = i;
                bad_value = guess;
                break;
            }
            if (truth == ignore_index || truth >= classes)
                continue;
            cells[truth * classes + guess]++;
        }
        for (Py_ssize_t j = 0; bad_at >= 0 && j < bad_at; j++) {
            int64_t truth = truths[j];
            if (truth != ignore_index && truth < classes)
                cells[truth * classes + guesses[j]]--;
        }
        count = 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t truth = read_label(&label, i), guess = read_label(&pred, i);
        if (guess < 0 || guess >= classes) {
            bad_at = i;
            bad_value = guess;
            for (Py_ssize_t j = 0; j < i; j++) {
                int64_t earlier = read_label(&label, j);
                if (earlier != ignore_index && earlier >= 0 && earlier < classes)
                    cells[earlier * classes + read_label(&pred, j)]--;
            }
            break;
        }
        if (truth == ignore_index || truth < 0 || truth >= classes)
            continue;
        cells[truth * classes + guess]++;
    }
    Py_END_ALLOW_THREADS
    if (bad_at >= 0) {
        PyErr_Format(PyExc_ValueError,
                     "prediction %lld is outside the %lld classes (0-%lld): an out-of-range prediction is a bug in "
                     "the model's output or its post-processing, not a pixel to count",
                     (long long)bad_value, (long long)classes, (long long)(classes - 1));
        goto done;
    }
    Py_INCREF(Py_None); /* Py_NewRef needs 3.10; JetPack 5 ships 3.8 */
    result = Py_None;
done:
    PyBuffer_Release(&pred);
    PyBuffer_Release(&label);
    PyBuffer_Release(&matrix);
    return result;
}

static PyMethodDef methods[] = {
    {"normalize", native_normalize, METH_VARARGS, "uint8 HxWx3 -> normalised float32/float16 3xHxW, in place."},
    {"argmax", native_argmax, METH_VARARGS, "float32 NxCxHxW logits -> uint8/int32 NxHxW labels, in place."},
    {"confusion", native_confusion, METH_VARARGS, "Accumulate a CxC int64 confusion matrix, in place."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "edgeseg's native host-side core.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
