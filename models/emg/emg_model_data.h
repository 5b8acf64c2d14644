#ifndef EMG_MODEL_DATA_H_
#define EMG_MODEL_DATA_H_

extern const unsigned char emg_model_data[];
extern const unsigned int emg_model_data_len;

#endif  // EMG_MODEL_DATA_H_
