"""Reading and writing Caffe's files: prototxt nets and solvers, caffemodels."""
