// The Python module `sedd_kernels._C`. Importing it runs the TORCH_LIBRARY registrations of the
// ops (they live in the same shared object); it also reports how the extension was built.
#include <Python.h>

#include "score_entropy/score_entropy_ops.h"

namespace {

PyObject* build_info(PyObject*, PyObject*) {
#ifdef SEDD_WITH_CUDA
  PyObject* cuda = Py_True;
#else
  PyObject* cuda = Py_False;
#endif
  return Py_BuildValue("{s:s,s:O}", "cpu_isa", sedd::cpu_isa(), "cuda", cuda);
}

PyMethodDef methods[] = {
    {"build_info", build_info, METH_NOARGS,
     "How the extension was built: {'cpu_isa': str, 'cuda': bool}."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "sedd-kernels compiled ops", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
