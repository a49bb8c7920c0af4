"""Each method's declaration (`MethodDeclaration`), one module per method, free of Keras."""
