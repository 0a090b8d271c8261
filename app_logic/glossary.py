"""Words a learner meets in the app, each explained in a sentence or two, and the
short help texts of the charts. Settings explain themselves (``nn.Recipe``'s
help texts); these are the ideas around them.
"""

__all__ = ["GLOSSARY", "CHART_HELP"]

GLOSSARY = {
    "Neural network": "A chain of simple units. Each unit adds up its inputs, each multiplied by a "
                      "weight, and passes the sum through an activation. Learning means adjusting "
                      "the weights until the outputs are right.",
    "Weight": "A number on a connection between two units: how much one unit's output counts "
              "for the next. A network is mostly its weights.",
    "Activation": "The function a unit applies to its sum, e.g. relu (negative sums become 0). "
                  "Without it a stack of layers could only draw straight lines.",
    "Convolution": "A small filter (e.g. 5x5 weights) slid over the whole image, giving a "
                   "feature map that is bright wherever its pattern appears. A stroke moved by "
                   "one pixel gives the same response, moved by one pixel.",
    "Max-pooling": "Keeps the largest value of each 2x2 block of a feature map: half the size, "
                   "and a pattern counts wherever in the block it was.",
    "Logits": "The output layer's raw score for each digit, before softmax.",
    "Softmax": "Turns the ten scores into probabilities that add up to 100%. It always picks "
               "something, even for a scribble, so a high probability is not certainty.",
    "Cross-entropy (loss)": "How surprised the network is by the right answer: -log of the "
                            "probability it gave the true digit. 0 is a perfect, sure answer; "
                            "training lowers its average.",
    "Gradient": "For every weight, how much the loss changes if the weight grows a little. "
                "Backpropagation computes all of them at once, layer by layer from the output back.",
    "Learning rate": "How far the weights move against the gradient at each step.",
    "Epoch": "One pass over all the training images.",
    "Batch": "The handful of images (e.g. 128) whose average gradient makes one step.",
    "Momentum": "Keeping part of the previous step in the next one, like a ball rolling downhill.",
    "Dropout": "Switching random hidden units off during training, so the network cannot lean "
               "on any single one; at test time all units are on.",
    "L2 weight decay": "A small pull of every weight towards zero at each step, against "
                       "memorising.",
    "Augmentation": "Showing each training image slightly changed (turned, slanted, moved, "
                    "thicker) so the network learns what does not change a digit.",
    "Overfitting": "Getting better on the training images while getting worse on new ones: the "
                   "training and validation curves part ways.",
    "Validation set": "Images held out of training and checked after every epoch, to see how the "
                      "network does on images it has not learned from.",
    "Test set": "MNIST's 10,000 test images, written by other people than the training images, "
                "used once at the end to report accuracy.",
    "Accuracy": "The share of images read right.",
    "Confusion matrix": "A table counting, for each true digit (row), what the network read "
                        "(column). The diagonal is right answers; everything else is a mistake.",
    "Precision": "Of the images the network read as a 7, the share that really were 7s.",
    "Recall": "Of the real 7s, the share the network read as 7.",
    "F1": "One number for both: the harmonic mean of precision and recall.",
    "Saliency map": "Which pixels the answer depends on: red where more ink would raise the "
                    "score of the answer, blue where it would lower it.",
    "Fine-tuning": "Training an already trained network a little more on new examples, e.g. "
                   "your own drawings.",
    "Rehearsal": "Mixing old examples (MNIST) into fine-tuning so the network does not forget "
                 "them while it learns the new ones.",
    "Forgetting": "A network trained only on new examples drifts away from what it knew: its "
                  "accuracy on the old task drops.",
    "PCA map": "The last hidden layer describes an image with many numbers; principal component "
               "analysis (PCA) finds the two directions in which those descriptions differ most "
               "and draws each image as a point along them.",
}

CHART_HELP = {
    "curves": "Loss and accuracy after each epoch, on the training images (solid) and on the "
              "held-out validation images (dashed). Both should improve; when training keeps "
              "improving and validation stops, the network has started to overfit.",
    "confusion": "Each row is a true digit, each column what the network read. Numbers off the "
                 "diagonal are mistakes: the darker the square, the more often.",
    "per_class": "For each digit: precision (of what was read as this digit, how much was "
                 "right), recall (of this digit, how much was found) and F1 (both in one "
                 "number). The axis starts at 0, so small differences look small.",
    "probabilities": "Softmax turns the network's ten scores into probabilities that add up to "
                     "100%. High is not the same as sure: softmax must spread 100% somewhere, "
                     "even for a scribble.",
    "saliency": "SmoothGrad: the gradient of the answer's score with respect to each pixel, "
                "averaged over copies of the drawing with a little noise added. Red: more ink "
                "here would make the network more sure of its answer; blue: less sure.",
    "map": "Every dot is one MNIST test digit, placed by what the network's last hidden layer "
           "makes of it (squeezed into two dimensions with PCA), coloured by its true digit. "
           "Digits the network finds alike sit together; the cross is your drawing.",
    "activations": "What each layer computes for your drawing: feature maps (convolutions, "
                   "bright = the filter's pattern is there) and units (dense layers, yellow = "
                   "strongly on).",
    "weights": "What the first layer looks for: each square is one unit's weights (a dense "
               "unit's 784 weights as a 28x28 picture, or a convolution filter). Red weights "
               "excite the unit, blue inhibit it.",
    "runs": "Each training and teaching of this session. Settings that differ between runs are "
            "highlighted; tick runs to draw their curves together.",
    "difference": "How run B's confusion matrix differs from run A's: on the diagonal (right "
                  "answers) red is better; off the diagonal (mistakes) blue is better.",
}
